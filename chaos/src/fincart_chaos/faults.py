"""Local faults: act on the processes and services a local run started (or is told about).

Every fault is healed at the end of its duration, also when the run is cancelled, and recorded.
Selectors use the chart's pod labels: ``app.kubernetes.io/component`` (processor, ingest, sync, and nats,
redis, postgres when the run started them) and ``statefulset.kubernetes.io/pod-name`` (``...-<replica>``);
without a pod name every replica of the component is hit, without a selector processor replica 0.
Network faults are set and cleared through the run's fault proxy (``proxy.py``) over its HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import httpx
from fincart_core.contracts.chaostest import Fault, ProxyFault, parse_duration
from fincart_core.contracts.report import FaultRecord
from fincart_core.settings import to_asyncpg_url
from fincart_devstack.localstack import ManagedProcess

COMPONENT_LABEL = "app.kubernetes.io/component"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
DB_DROP_EVERY_S = 0.5
DB_TIMEOUT_S = 5.0
PROXY_TIMEOUT_S = 10.0
MESSAGE_MAX = 300


@dataclass
class LocalTargets:
    """What local faults can act on. ``nats``/``redis`` are set only when this run owns the process;
    ``nats_nodes`` are the JetStream nodes it owns (one, or the three of a cluster)."""

    database_url: str
    services: dict[str, list[ManagedProcess]] = field(default_factory=dict)
    nats: ManagedProcess | None = None
    redis: ManagedProcess | None = None
    nats_nodes: list[ManagedProcess] = field(default_factory=list)
    proxy_url: str | None = None  # control API of the run's fault proxy (network faults)
    # replica i of n of a new processor generation, not started (rescale)
    new_processor: Callable[[int, int], ManagedProcess] | None = None  # (index, generation)
    generations: int = 0

    def select(self, selector: dict[str, str]) -> list[ManagedProcess]:
        chosen = self.services.get(selector.get(COMPONENT_LABEL, "processor"), [])
        pod = selector.get(POD_NAME_LABEL)
        if pod:
            index = pod.rsplit("-", 1)[-1]
            return chosen[int(index) : int(index) + 1] if index.isdigit() else []
        return chosen if selector else chosen[:1]


class FaultSkipped(Exception):
    """The fault cannot act on this setup (e.g. an external Redis); recorded as skipped."""


async def _restart(processes: Sequence[ManagedProcess]) -> None:
    # side by side: a ServiceProcess's start waits until its /readyz answers
    await asyncio.gather(*(asyncio.to_thread(process.start) for process in processes))


@contextlib.asynccontextmanager
async def _killed(processes: Sequence[ManagedProcess]) -> AsyncIterator[str]:
    for process in processes:
        await asyncio.to_thread(process.kill)
    try:
        yield f"SIGKILL {', '.join(p.name for p in processes)}"
    finally:
        await _restart(processes)


@contextlib.asynccontextmanager
async def _stopped(process: ManagedProcess | None, what: str) -> AsyncIterator[str]:
    if process is None:
        raise FaultSkipped(f"{what} was not started by this run, so it cannot be stopped")
    await asyncio.to_thread(process.stop)  # graceful: a restart, not a crash that loses unsynced writes
    try:
        yield f"stopped {process.name}"
    finally:
        await asyncio.to_thread(process.start)


@contextlib.asynccontextmanager
async def _paused(processes: Sequence[ManagedProcess]) -> AsyncIterator[str]:
    pids = [p.pid for p in processes if p.running and p.pid]
    for pid in pids:
        os.killpg(pid, signal.SIGSTOP)
    try:
        yield f"SIGSTOP {', '.join(p.name for p in processes)}"
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)


@contextlib.asynccontextmanager
async def _network(fault: Fault, proxy_url: str | None) -> AsyncIterator[str]:
    assert fault.network is not None  # the spec model requires it for type network
    if proxy_url is None:
        raise FaultSkipped("no fault proxy in this run")
    body = ProxyFault(route=fault.network.target.route, **fault.network.model_dump(exclude={"target"}))
    async with httpx.AsyncClient(base_url=proxy_url, timeout=PROXY_TIMEOUT_S) as http:
        answer = await http.put(f"/faults/{fault.name}", content=body.model_dump_json(by_alias=True))
        answer.raise_for_status()
        try:
            yield f"{body.mode} on {body.route} (probability {body.probability}, {body.direction})"
        finally:
            (await http.delete(f"/faults/{fault.name}")).raise_for_status()


async def _roll_processors(targets: LocalTargets, replicas: int) -> str:
    """Go to ``replicas`` processors the way a StatefulSet rolling update does: from the highest ordinal down,
    stop replica i and start its successor, which is told the new count. Until the roll is done, old and new
    replicas run side by side, each sure of its own replica count (the ownership they compute overlaps)."""
    if targets.new_processor is None:
        raise FaultSkipped("this run cannot start processors")
    current = targets.services.setdefault("processor", [])  # changed in place: the stack stops what runs at the end
    before = len(current)
    targets.generations += 1
    for i in reversed(range(max(before, replicas))):
        if i < len(current):
            await asyncio.to_thread(current[i].stop)
        if i >= replicas:
            current.pop(i)
            continue
        successor = targets.new_processor(i, targets.generations)
        if i < len(current):
            current[i] = successor
        else:
            current.append(successor)
        await _restart([successor])
    return f"{before} -> {replicas} processor(s)"


@contextlib.asynccontextmanager
async def _rescaled(targets: LocalTargets, replicas: int) -> AsyncIterator[str]:
    before = len(targets.services.get("processor", []))
    try:
        yield await _roll_processors(targets, replicas)
    finally:  # also when the first roll broke half-way (a successor that could not start)
        await _roll_processors(targets, before)


@contextlib.asynccontextmanager
async def _nodes_lost(targets: LocalTargets, which: str) -> AsyncIterator[str]:
    nodes = targets.nats_nodes if which == "all" else targets.nats_nodes[:1]
    if not nodes:
        raise FaultSkipped("nats-server was not started by this run, so it cannot be killed")
    async with _killed(nodes) as message:
        yield f"{message} of {len(targets.nats_nodes)} JetStream node(s)"


async def terminate_backends(database_url: str) -> int:
    """``pg_terminate_backend`` on every other connection to the FinCart database; how many."""
    conn = await asyncpg.connect(to_asyncpg_url(database_url), timeout=DB_TIMEOUT_S)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
            timeout=DB_TIMEOUT_S,
        )
    finally:
        await conn.close()
    return count


async def drop_connections(database_url: str, duration: float) -> str:
    """Keep terminating FinCart's database connections for ``duration`` seconds."""
    deadline = time.monotonic() + duration
    dropped = 0
    while True:
        dropped += await terminate_backends(database_url)
        if time.monotonic() + DB_DROP_EVERY_S > deadline:
            return f"terminated {dropped} connections"
        await asyncio.sleep(DB_DROP_EVERY_S)


FaultWatcher = Callable[[FaultRecord], None]


async def inject_once(fault: Fault, targets: LocalTargets, watch: FaultWatcher | None = None) -> FaultRecord:
    """Inject ``fault`` once, hold it for its duration, heal it; the record says what happened. ``watch`` sees
    the record when the fault is in place (result ``injected``) and when it is over."""
    record = FaultRecord(name=fault.name, type=fault.type, started_at=time.time())
    duration = parse_duration(fault.duration)
    notify = watch or (lambda _record: None)
    try:
        if fault.type == "dbConnectionDrop":
            notify(record.model_copy())
            record.message = await drop_connections(targets.database_url, duration)
        else:
            holds: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[str]]] = {
                "podKill": lambda: _killed(_chosen(fault, targets)),
                "processorPause": lambda: _paused(_chosen(fault, targets)),
                "pause": lambda: _paused(_chosen(fault, targets)),
                "network": lambda: _network(fault, targets.proxy_url),
                "rescale": lambda: _rescaled(targets, fault.replicas or 0),
                "brokerNodeLoss": lambda: _nodes_lost(targets, fault.nodes),
                "brokerRestart": lambda: _stopped(targets.nats, "nats-server"),
                "redisOutage": lambda: _stopped(targets.redis, "redis-server"),
            }
            async with holds[fault.type]() as message:
                record.message = message
                notify(record.model_copy())
                await asyncio.sleep(duration)
        record.result = "healed"
    except FaultSkipped as exc:
        record.result, record.message = "skipped", str(exc)
    except Exception as exc:  # a fault that fails is recorded; the verdict decides what it means
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        record.result, record.message = "failed", f"{type(exc).__name__}: {first_line}"[:MESSAGE_MAX]
    record.healed_at = time.time()
    notify(record.model_copy())
    return record


def _chosen(fault: Fault, targets: LocalTargets) -> list[ManagedProcess]:
    chosen = targets.select(fault.selector)
    if not chosen:
        raise FaultSkipped(f"no local process matches selector {fault.selector}")
    return chosen


async def run_schedule(
    faults: Sequence[Fault],
    targets: LocalTargets,
    load_done: asyncio.Event,
    records: list[FaultRecord],
    watch: FaultWatcher | None = None,
    one_at_a_time: bool = False,
) -> None:
    """Run every fault on its schedule (relative to now = load start); repeats stop once the load is done.
    ``watch`` sees each fault start and end; ``one_at_a_time`` (a random schedule): a fault never starts before
    the previous one is healed, even when healing took longer than planned (a rescale's processes starting)."""
    start = time.monotonic()
    if one_at_a_time:
        for fault in faults:
            await asyncio.sleep(max(0.0, start + parse_duration(fault.start_after) - time.monotonic()))
            records.append(await inject_once(fault, targets, watch))
        return

    async def one(fault: Fault) -> None:
        at = parse_duration(fault.start_after)
        interval = parse_duration(fault.interval) if fault.interval else None
        while True:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            records.append(await inject_once(fault, targets, watch))
            if interval is None or load_done.is_set():
                return
            at += interval

    await asyncio.gather(*(one(fault) for fault in faults))
