"""The processor of one replica: NATS and Postgres connections, one consumer task per owned partition,
and the consumer-lag poller. ``start``/``stop`` are used by the app, the tests and the benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
import nats.errors
import nats.js.errors
from fincart_core.ops import OK, probe
from fincart_core.partition import Topology, owned_partitions
from fincart_core.streams import connect, ensure_streams
from nats.aio.client import Client as NATS

from fincart_processor.consumer import PartitionConsumer
from fincart_processor.event_publisher import EventPublisher
from fincart_processor.metrics import CONSUMER_LAG
from fincart_processor.settings import ProcessorSettings

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 20.0
HEALTHY_RUN_S = 30.0


class Processor:
    def __init__(self, settings: ProcessorSettings) -> None:
        self.settings = settings
        self.topology = Topology(settings.partitions, settings.nats_prefix)
        self.partitions = owned_partitions(settings.partitions, settings.replicas, settings.index)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consumers: list[PartitionConsumer] = []
        self._nc: NATS | None = None
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        s = self.settings
        self._pool = await asyncpg.create_pool(s.asyncpg_url, min_size=1, max_size=s.db_pool_size, timeout=10)
        self._nc = await connect(s.nats_url, s.service_name)
        js = self._nc.jetstream()
        await ensure_streams(js, self.topology)
        events = EventPublisher(self._nc, self.topology)
        await events.start()
        self._consumers = [PartitionConsumer(p, self._nc, js, self._pool, self.topology, events, s)
                           for p in self.partitions]
        self._tasks = [asyncio.create_task(self._supervise(c), name=f"partition-{c.partition}")
                       for c in self._consumers]
        self._tasks.append(asyncio.create_task(self._poll_lag(), name="lag"))
        log.info("processor started", extra={"service": s.service_name, "partition": self.partitions})

    async def _supervise(self, consumer: PartitionConsumer) -> None:
        """Keep a partition's consumer running: a failure to (re)create it is retried with backoff."""
        delay = self.settings.retry_backoff_s
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await consumer.run(self._stopping)
            except Exception as exc:  # broker gone, consumer deleted, or a bug: restart it, bounded by backoff
                expected = isinstance(exc, TimeoutError | nats.errors.Error | OSError)
                level = logging.WARNING if expected else logging.ERROR
                log.log(level, "consumer stopped, restarting", extra={"partition": consumer.partition,
                                                                       "error": repr(exc)})
                if time.monotonic() - started > HEALTHY_RUN_S:
                    delay = self.settings.retry_backoff_s  # it ran fine for a while: a fresh failure
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 5.0)

    async def _poll_lag(self) -> None:
        assert self._nc is not None
        js = self._nc.jetstream()
        while not self._stopping.is_set():
            for p in self.partitions:
                try:
                    info = await js.consumer_info(self.topology.orders_stream, self.topology.consumer_name(p))
                except (TimeoutError, nats.errors.Error):
                    continue  # the gauge keeps its last value; the next poll tries again
                CONSUMER_LAG.labels(str(p)).set(info.num_pending or 0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.lag_interval_s)

    async def wait_drained(self, timeout: float, interval: float = 0.05) -> None:
        """Return once every owned partition has nothing undelivered or unacked (TimeoutError after
        ``timeout``): the end of a drain for tests and the pipeline benchmark."""
        assert self._nc is not None
        js = self._nc.jetstream()
        stream = self.topology.orders_stream
        async with asyncio.timeout(timeout):
            while True:
                try:
                    infos = [await js.consumer_info(stream, self.topology.consumer_name(p)) for p in self.partitions]
                except nats.js.errors.NotFoundError:  # consumers not created yet
                    infos = []
                if infos and all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
                    return
                await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Finish the batches in flight (bounded), then close the connections."""
        self._stopping.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
        if self._nc is not None:
            # flush the last acks, then close: drain() would wait out its timeout on the pull subscriptions
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await self._nc.flush(timeout=2)
            await self._nc.close()
        if self._pool is not None:
            await self._pool.close()

    async def readiness(self) -> dict[str, str]:
        assert self._pool is not None
        subscribed = sum(c.subscribed for c in self._consumers)
        return {
            "nats": OK if self._nc is not None and self._nc.is_connected else "disconnected",
            "postgres": await probe(self._pool.fetchval("SELECT 1")),
            "consumers": OK if subscribed == len(self._consumers) else f"{subscribed}/{len(self._consumers)} running",
        }
