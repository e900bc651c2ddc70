"""The partitions this replica applies: a lease round every FINCART_LEASE_RENEW_S (``lease_store``) and one
consumer task per lease held, started on acquiring and stopped on losing or handing over.

Handing over (to balance a newly started replica) stops the consumer first, after its batch in flight is
acked, and only then frees the lease, so the next owner starts from a clean ack floor. A lease lost without
notice (this replica stalled longer than the TTL) is harmless: the fence in each batch transaction refuses
it, and the next owner re-applies the unacked range first.

A replica cut off from PostgreSQL stops believing in its leases when they expire, not later: they expire at
the earliest FINCART_LEASE_TTL_S after the start of the last round that renewed them, and a round still
unanswered then (a blackholed connection answers nothing) is given up and every consumer stopped.
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
from fincart_processor.failures import timed_out
from fincart_processor.lease_store import Fence, LeaseLost, Round, lease_round, leave, release
from fincart_processor.metrics import DB_TIMEOUTS, LEASE_CHANGES, PARTITION_OWNED
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
        self._valid_until = float("-inf")  # monotonic time before which the leases held cannot have expired
        self._round: asyncio.Task[Round] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, stopping: asyncio.Event) -> None:
        self._task = asyncio.create_task(self._run(stopping), name="leases")

    def healthy(self) -> bool:
        """The lease loop runs and its leases are current (a replica whose loop died must not look ready)."""
        return self._task is not None and not self._task.done() and time.monotonic() < self._valid_until

    async def _run(self, stopping: asyncio.Event) -> None:
        s = self._settings
        while not stopping.is_set():
            if self._round is None or self._round.done():  # else a round given up is still being cancelled
                await self._renew()
            self._publish_gauges()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), s.lease_renew_s)

    async def _renew(self) -> None:
        """One lease round, given up at the leases' expiry (then its task is cancelled in the background:
        cancelling a query on a dead connection takes up to FINCART_DB_QUERY_TIMEOUT_S)."""
        s = self._settings
        started = time.monotonic()
        deadline = self._valid_until if self.held else started + s.lease_ttl_s
        self._round = task = asyncio.create_task(self._lease_round(), name="lease-round")
        task.add_done_callback(_consume_outcome)
        done, _ = await asyncio.wait([task], timeout=max(0.0, deadline - started))
        try:
            if not done:
                task.cancel()
                raise TimeoutError("lease round unanswered when the leases expire")
            outcome = task.result()
            # PostgreSQL renewed them for the TTL from its now(), which is later than ``started``
            self._valid_until = started + s.lease_ttl_s
            await self._follow(outcome)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            if timed_out(exc):
                DB_TIMEOUTS.labels("lease_round").inc()
            log.warning("lease round failed", extra={"error": repr(exc)})
            if self.held and (not done or time.monotonic() >= self._valid_until):
                # our leases have expired by now: others may own the partitions
                await self._stop(list(self.held), "lost")

    async def _lease_round(self) -> Round:
        s = self._settings
        async with self._pool.acquire(timeout=s.db_acquire_timeout_s) as conn:
            return await lease_round(conn, s.partitions, self.me, s.lease_ttl_s)

    async def _follow(self, outcome: Round) -> None:
        """Make the running consumers match the leases held."""
        lost = [p for p, h in self.held.items() if outcome.held.get(p) != h.consumer.fence.token]
        await self._stop(lost, "lost")
        for p in [p for p, h in self.held.items() if h.task.done()]:  # stopped by LeaseLost: restart it
            del self.held[p]
        if outcome.release:
            await self._stop(outcome.release, "released")
            async with self._pool.acquire(timeout=self._settings.db_acquire_timeout_s) as conn:
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
        self._publish_gauges()  # not held from now on, even while the batches in flight finish
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
            async with self._pool.acquire(timeout=self._settings.db_acquire_timeout_s) as conn:
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


def _consume_outcome(task: asyncio.Task[Round]) -> None:
    """A round given up may still end in an error: read it, so it is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()
