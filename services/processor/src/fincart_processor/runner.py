"""The processor of one replica: NATS and Postgres connections, the partition leases with one consumer task
per partition held (``ownership``), and the consumer-lag poller. ``start``/``stop`` are used by the app, the
tests and the benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import nats.errors
import nats.js.errors
from fincart_core.ops import OK, probe
from fincart_core.partition import Topology
from fincart_core.streams import connect, ensure_streams
from nats.aio.client import Client as NATS

from fincart_processor.consumer import PartitionConsumer
from fincart_processor.event_publisher import EventPublisher
from fincart_processor.lease_store import Fence
from fincart_processor.metrics import CONSUMER_LAG
from fincart_processor.ownership import Ownership
from fincart_processor.settings import ProcessorSettings

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 20.0


async def create_pool(settings: ProcessorSettings) -> asyncpg.Pool:
    """The processor's PostgreSQL pool, every wait bounded at both ends: connecting (db_acquire_timeout_s; each
    ``acquire`` passes it too), each statement in the client (command_timeout: the query is cancelled, and a
    connection whose cancel gets no answer either, a half-open one, is closed) and in PostgreSQL, which also ends
    a session left idle in a transaction, so a replica cut off mid-transaction (its client gone silent, the
    server hearing nothing) does not hold row and lease-table locks that the other replicas wait for."""
    bound_ms = str(round(settings.db_query_timeout_s * 1000))
    return await asyncpg.create_pool(
        settings.asyncpg_url,
        min_size=1,
        max_size=settings.db_pool_size,
        timeout=settings.db_acquire_timeout_s,
        command_timeout=settings.db_query_timeout_s,
        server_settings={"statement_timeout": bound_ms, "idle_in_transaction_session_timeout": bound_ms},
    )


class Processor:
    def __init__(self, settings: ProcessorSettings) -> None:
        self.settings = settings
        self.topology = Topology(settings.partitions, settings.nats_prefix)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._nc: NATS | None = None
        self._pool: asyncpg.Pool | None = None
        self._ownership: Ownership | None = None

    @property
    def partitions(self) -> list[int]:
        """The partitions this replica holds the leases of, now."""
        return sorted(self._ownership.held) if self._ownership else []

    async def start(self) -> None:
        s = self.settings
        self._pool = pool = await create_pool(s)
        self._nc = nc = await connect(s.nats_url, s.service_name)
        js = nc.jetstream()
        await ensure_streams(js, self.topology)
        events = EventPublisher(nc, self.topology)
        await events.start()

        def consumer(fence: Fence) -> PartitionConsumer:
            return PartitionConsumer(fence, nc, js, pool, self.topology, events, s)

        self._ownership = Ownership(s, pool, consumer)
        self._ownership.start(self._stopping)
        self._tasks = [asyncio.create_task(self._poll_lag(), name="lag")]
        log.info("processor started", extra={"service": s.service_name, "replica": self._ownership.me})

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
        """Return once every partition has nothing undelivered or unacked (TimeoutError after ``timeout``):
        the end of a drain for tests and the pipeline benchmark."""
        assert self._nc is not None
        js = self._nc.jetstream()
        stream = self.topology.orders_stream
        async with asyncio.timeout(timeout):
            while True:
                try:
                    infos = [
                        await js.consumer_info(stream, self.topology.consumer_name(p))
                        for p in range(self.topology.partitions)
                    ]
                except nats.js.errors.NotFoundError:  # consumers not created yet
                    infos = []
                if infos and all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
                    return
                await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Finish the batches in flight (bounded), hand the leases back, then close the connections."""
        self._stopping.set()
        if self._ownership is not None:
            await self._ownership.stop(STOP_TIMEOUT_S)
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
            try:
                await asyncio.wait_for(self._pool.close(), STOP_TIMEOUT_S)
            except TimeoutError:
                self._pool.terminate()

    async def _ping(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire(timeout=self.settings.db_acquire_timeout_s) as conn:
            await conn.fetchval("SELECT 1")

    async def readiness(self) -> dict[str, str]:
        assert self._pool is not None and self._ownership is not None
        held = list(self._ownership.held.values())
        subscribed = sum(h.consumer.subscribed for h in held)
        return {
            "nats": OK if self._nc is not None and self._nc.is_connected else "disconnected",
            "postgres": await probe(self._ping()),
            "leases": OK if self._ownership.healthy() else "not renewed",
            "consumers": OK if subscribed == len(held) else f"{subscribed}/{len(held)} running",
        }
