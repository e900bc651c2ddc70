"""The partitions this replica applies: a lease round every FINCART_LEASE_RENEW_S (``lease_store``) and one
consumer task per lease held, started on acquiring and stopped on losing or handing over.

Handing over (to balance a newly started replica) stops the consumer first, after its batch in flight is
acked, and only then frees the lease, so the next owner starts from a clean ack floor. A lease lost without
notice (this replica stalled longer than the TTL) is harmless: the fence in each batch transaction refuses
it, and the next owner re-applies the unacked range first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import nats.errors

from fincart_processor.consumer import PartitionConsumer
from fincart_processor.lease_store import Fence, LeaseLost, Round, lease_round, leave, release
from fincart_processor.metrics import LEASE_CHANGES, PARTITION_OWNED
from fincart_processor.settings import ProcessorSettings

log = logging.getLogger(__name__)
HEALTHY_RUN_S = 30.0


_instances = itertools.count()


def replica_id() -> str:
    """``<hostname>-<pid>-<n>/<incarnation>``: the name part is the same when the process or its pod restarts
    (a container's pid, a re-exec), so the new incarnation takes over the leases at once (``leases``); n tells
    apart processors run side by side in one process (tests); the incarnation is new each time."""
    return f"{socket.gethostname()}-{os.getpid()}-{next(_instances)}/{secrets.token_hex(4)}"


@dataclass
class Held:
    consumer: PartitionConsumer
    stopping: asyncio.Event
    task: asyncio.Task[None]


class Ownership:
    def __init__(
        self,
        settings: ProcessorSettings,
        pool: asyncpg.Pool,
        make_consumer: Callable[[Fence], PartitionConsumer],
    ) -> None:
        self.me = replica_id()
        self._settings, self._pool, self._make_consumer = settings, pool, make_consumer
        self.held: dict[int, Held] = {}
        self._last_round = float("-inf")  # monotonic time of the last successful lease round
        self._task: asyncio.Task[None] | None = None

    def start(self, stopping: asyncio.Event) -> None:
        self._task = asyncio.create_task(self._run(stopping), name="leases")

    def healthy(self) -> bool:
        """The lease loop runs and its leases are current (a replica whose loop died must not look ready)."""
        return (
            self._task is not None
            and not self._task.done()
            and time.monotonic() - self._last_round < self._settings.lease_ttl_s
        )

    async def _run(self, stopping: asyncio.Event) -> None:
        s = self._settings
        while not stopping.is_set():
            try:
                async with self._pool.acquire() as conn:
                    outcome = await lease_round(conn, s.partitions, self.me, s.lease_ttl_s)
                self._last_round = time.monotonic()
                await self._follow(outcome)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("lease round failed", extra={"error": repr(exc)})
                if time.monotonic() - self._last_round > s.lease_ttl_s and self.held:
                    # our leases have expired by now: others may own the partitions
                    await self._stop(list(self.held), "lost")
            self._publish_gauges()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), s.lease_renew_s)

    async def _follow(self, outcome: Round) -> None:
        """Make the running consumers match the leases held."""
        lost = [p for p, h in self.held.items() if outcome.held.get(p) != h.consumer.fence.token]
        await self._stop(lost, "lost")
        for p in [p for p, h in self.held.items() if h.task.done()]:  # stopped by LeaseLost: restart it
            del self.held[p]
        if outcome.release:
            await self._stop(outcome.release, "released")
            async with self._pool.acquire() as conn:
                await release(conn, outcome.release, self.me)
        for p, token in outcome.held.items():
            if p not in self.held and p not in outcome.release:
                self._start(Fence(p, self.me, token))

    def _start(self, fence: Fence) -> None:
        consumer = self._make_consumer(fence)
        stopping = asyncio.Event()
        task = asyncio.create_task(self._supervise(consumer, stopping), name=f"partition-{fence.partition}")
        self.held[fence.partition] = Held(consumer, stopping, task)
        LEASE_CHANGES.labels("acquired").inc()
        log.info("partition acquired", extra={"partition": fence.partition, "token": fence.token})

    async def _stop(self, partitions: list[int], change: str, timeout: float | None = None) -> None:
        """Stop these partitions' consumers after their batch in flight (bounded: then cancelled)."""
        stopping = [self.held.pop(p) for p in partitions if p in self.held]
        for h in stopping:
            h.stopping.set()
        tasks = [h.task for h in stopping]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout or self._settings.lease_ttl_s / 2)
            for task in late:
                task.cancel()
        for h in stopping:
            LEASE_CHANGES.labels(change).inc()
            log.info(f"partition {change}", extra={"partition": h.consumer.partition})

    async def stop(self, timeout: float) -> None:
        """Finish the batches in flight (bounded), then free every lease at once for the other replicas."""
        if self._task is not None:
            await asyncio.wait([self._task], timeout=timeout)
        partitions = list(self.held)
        await self._stop(partitions, "released", timeout)
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            async with self._pool.acquire() as conn:
                await leave(conn, partitions, self.me)
        self._publish_gauges()

    def _publish_gauges(self) -> None:
        for p in range(self._settings.partitions):
            PARTITION_OWNED.labels(str(p)).set(1 if p in self.held else 0)

    async def _supervise(self, consumer: PartitionConsumer, stopping: asyncio.Event) -> None:
        """Keep a partition's consumer running while the lease is held: a failure to (re)create it is retried
        with backoff; LeaseLost ends it."""
        delay = self._settings.retry_backoff_s
        while not stopping.is_set():
            started = time.monotonic()
            try:
                await consumer.run(stopping)
            except LeaseLost as exc:
                log.warning("lease lost, consumer stopped", extra={"partition": consumer.partition, "error": str(exc)})
                return
            except Exception as exc:  # broker gone, consumer deleted, or a bug: restart it, bounded by backoff
                expected = isinstance(exc, TimeoutError | nats.errors.Error | OSError)
                level = logging.WARNING if expected else logging.ERROR
                log.log(
                    level, "consumer stopped, restarting", extra={"partition": consumer.partition, "error": repr(exc)}
                )
                if time.monotonic() - started > HEALTHY_RUN_S:
                    delay = self._settings.retry_backoff_s  # it ran fine for a while: a fresh failure
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                delay = min(delay * 2, 5.0)
