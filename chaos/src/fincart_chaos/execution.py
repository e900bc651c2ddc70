"""One ChaosTest against running services: load (+ observer, + local faults), settle, verify, report.

``run_test`` is what ``fincart-chaos run --local`` does once the stack is up; ``verify_only`` is the
verification Job's half (the load ran elsewhere: rebuild it from the spec, replay the events).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
from fincart_core.contracts.chaostest import ChaosTest, ChaosTestSpec, parse_duration
from fincart_core.contracts.report import FaultRecord, ScheduledFault
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fincart_chaos import ledger as ledger_io
from fincart_chaos.faults import FaultWatcher, LocalTargets, run_schedule
from fincart_chaos.history_checks import Extras, fault_windows
from fincart_chaos.history_data import ReadApiEvidence, ReadSide, final_walk, read_store
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.load import LoadStats, run_load
from fincart_chaos.observer import Observer, ReplayUnavailable, Seen, replay
from fincart_chaos.report import Report, Timings, assemble, percentiles, rate
from fincart_chaos.sync_endpoint import SyncEndpoint
from fincart_chaos.verify import Context, History, Result, read_history, settle, verify
from fincart_chaos.workload import Request, full_plan, order_ids, plan

OBSERVER_READY_S = 15.0
# a connection being opened or closed (each bounded by 10 s) when the observer is told to stop
OBSERVER_STOP_S = 30.0
HTTP_TIMEOUT_S = 10.0
ORDERS_API_SAMPLES = 10


@dataclass(frozen=True)
class Endpoints:
    ingest_url: str
    database_url: str
    secret: str = ""
    sync: SyncEndpoint | None = None
    host: str | None = None  # Host header of every webhook (an ingress's rule)


def judge(
    spec: ChaosTestSpec,
    requests: Sequence[Request],
    ledger: Sequence[LedgerEntry] | None,
    history: History,
    observed: Sequence[Seen] | None,
    faults: Sequence[FaultRecord],
    caught_up: bool,
    extras: Extras,
    unobserved: str = "no sync service to observe",
) -> tuple[Context, Result]:
    """The verdict over what a run (or a verify-only pass over runners' ledgers) gathered."""
    extras.selectors = {f.name: f.selector for f in spec.faults}
    ctx = Context(
        requests,
        ledger,
        history,
        observed,
        faults=faults,
        max_lost=spec.verification.max_lost,
        caught_up=caught_up,
        deadline=spec.settle.timeout,
        unobserved=unobserved,
        extras=extras,
    )
    return ctx, verify(ctx, spec.enabled_invariants())


@contextlib.contextmanager
def progress_display(stats: LoadStats, console: Console, enabled: bool) -> Iterator[Callable[[LoadStats], None]]:
    """A rich progress bar (sent, acked, errors, rate) fed by the load's callback."""
    if not enabled:
        yield lambda _stats: None
        return
    columns = (
        TextColumn("[bold]load"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("", total=stats.total)

        def update(s: LoadStats) -> None:
            progress.update(
                task,
                completed=s.done,
                description=(
                    f"sent {s.sent}  acked {s.acked}  rejected {s.rejected}  errors {s.errors}  {s.rate:,.0f}/s"
                ),
            )

        yield update


async def orders_api(sync: SyncEndpoint, history: History) -> tuple[bool, str]:
    """GET /orders/{id} for a sample of the orders: each answers 200 with the stored version."""
    sample = history.orders[:ORDERS_API_SAMPLES]
    if not sample:
        return False, "no order rows to look up"
    bad = []
    async with sync.http(HTTP_TIMEOUT_S) as http:
        for row in sample:
            try:
                answer = await http.get(f"/orders/{quote(row.order_id, safe='')}")
                if answer.status_code != 200 or answer.json().get("version") != row.version:
                    bad.append(f"{row.order_id}: {answer.status_code}")
            except httpx.HTTPError as exc:
                bad.append(f"{row.order_id}: {type(exc).__name__}")
    listed = ""
    if not bad:
        async with sync.http(HTTP_TIMEOUT_S) as http:
            answer = await http.get("/orders", params={"limit": 1})
            if answer.status_code != 200:
                bad.append(f"GET /orders: {answer.status_code}")
            listed = ", GET /orders answers 200"
    return not bad, (
        f"{len(sample) - len(bad)}/{len(sample)} orders readable{listed}" if not bad else "; ".join(bad[:5])
    )


def _latencies_to_websocket(ledger: Sequence[LedgerEntry], observed: Sequence[Seen]) -> list[float]:
    """For each version a client got as an event: when it arrived minus when its webhook was acked."""
    acked_at = {e.webhook_id: e.done_at for e in ledger if e.acked}
    first_seen: dict[tuple[str, int], Seen] = {}
    for seen in observed:
        if seen.kind == "event":
            first_seen.setdefault((seen.order_id, seen.version), seen)
    return [
        max(0.0, (s.received_at - acked_at[s.last_webhook_id]) * 1000)
        for s in first_seen.values()
        if s.last_webhook_id in acked_at
    ]


def planned(test: ChaosTest) -> list[ScheduledFault]:
    """The faults of the run as scheduled (a random schedule drawn from its seed), for the report."""
    return [
        ScheduledFault(
            name=f.name, type=f.type, start_after_s=parse_duration(f.start_after), duration_s=parse_duration(f.duration)
        )
        for f in test.spec.scheduled_faults()
    ]


async def run_test(
    test: ChaosTest,
    endpoints: Endpoints,
    targets: LocalTargets | None,
    *,
    console: Console,
    show_progress: bool = True,
    watch_faults: FaultWatcher | None = None,
) -> Report:
    """``watch_faults`` sees each fault record as the fault starts and ends (e.g. to export fault windows)."""
    spec = test.spec
    load = spec.load
    requests = [plan(load, r) for r in range(load.parallelism)]
    orders = order_ids(load)
    observer = None
    observer_task = None
    read_side = None
    if endpoints.sync:
        only = orders[0] if len(orders) == 1 else None
        read_side = ReadSide(
            endpoints.sync, orders=len(orders), order=only, resuming=load.resuming_observers, seed=load.seed
        )
        observer = Observer(endpoints.sync, order=only, on_event=read_side.on_event)
        observer_task = asyncio.create_task(observer.run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(observer.ready.wait(), OBSERVER_READY_S)
        await read_side.start()
    records: list[FaultRecord] = []
    schedule = planned(test)
    if spec.schedule:
        console.print(
            f"random schedule (seed {spec.schedule.seed}): "
            + (
                ", ".join(f"{s.name} at {s.start_after_s:g}s for {s.duration_s:g}s" for s in schedule)
                or "no fault drawn"
            )
        )
    load_done = asyncio.Event()
    stats = LoadStats(total=sum(len(r) for r in requests))
    started = time.monotonic()
    scheduled = spec.scheduled_faults()
    faults = (
        asyncio.create_task(
            run_schedule(scheduled, targets, load_done, records, watch_faults, one_at_a_time=spec.schedule is not None)
        )
        if (scheduled and targets)
        else None
    )
    try:
        with progress_display(stats, console, show_progress) as on_progress:
            parts = await asyncio.gather(
                *(
                    run_load(
                        reqs,
                        endpoints.ingest_url,
                        endpoints.secret,
                        concurrency=load.concurrency,
                        rate=load.rate,
                        runner=index,
                        stats=stats,
                        on_progress=on_progress,
                        host=endpoints.host,
                    )
                    for index, reqs in enumerate(requests)
                )
            )
        load_s = time.monotonic() - started
        load_done.set()
        if read_side:
            read_side.load_done()
        if faults:
            await faults  # every fault is healed before the pipeline is asked to settle
    finally:
        if faults and not faults.done():
            faults.cancel()
            await asyncio.gather(faults, return_exceptions=True)
    ledger = [entry for part in parts for entry in part]
    drain_from = time.monotonic()
    acked = {e.webhook_id for e in ledger if e.acked}
    try:
        settled = await settle(
            endpoints.database_url,
            orders,
            len(acked),
            parse_duration(spec.settle.timeout),
            observer.log if observer else None,
        )
        finished = time.monotonic()
        history = await read_history(endpoints.database_url, orders)
    finally:
        if observer and observer_task:
            await observer.stop()
            try:
                await asyncio.wait_for(observer_task, OBSERVER_STOP_S)
            except TimeoutError:  # its log so far stands (cancelled while opening or closing a connection)
                observer.problems.insert(0, f"the observer did not stop within {OBSERVER_STOP_S:.0f}s")
    resumed, api_evidence = await read_side.finish(HTTP_TIMEOUT_S * 3) if read_side else ([], ReadApiEvidence())
    observed = observer.log if observer else None
    sent = [r for part in requests for r in part]
    store = await read_store(endpoints.database_url, orders, [r.webhook.webhook_id for r in sent if not r.valid])
    extras = Extras(store, resumed, api_evidence.reads, api_evidence.during, api_evidence.after if read_side else None)
    ctx, result = judge(spec, sent, ledger, history, observed, records, settled, extras)
    api = await orders_api(endpoints.sync, history) if endpoints.sync else None
    total_s = finished - started
    timings = Timings(
        total_s=round(total_s, 3),
        load_s=round(load_s, 3),
        drain_s=round(finished - drain_from, 3),
        settled=settled,
        throughput_rps=round(len(ledger) / total_s, 1) if total_s else None,
        ack_latency_ms=percentiles([e.latency_ms for e in ledger if e.acked]),
        webhook_to_websocket_ms=percentiles(_latencies_to_websocket(ledger, observed or [])),
    )
    notes = (observer.problems[:5] if observer else []) + api_evidence.problems[:5]
    if read_side:
        modes = sum((r.resumes for r in read_side.resumers), Counter())
        notes.append(
            f"read side: {len(api_evidence.reads)} events read back through GET /orders/{{id}}, "
            f"{len(api_evidence.during)} GET /orders walks during the load, resuming observers "
            f"reconnected {dict(modes)}"
        )
    if api_evidence.not_probed:
        notes.append(f"{api_evidence.not_probed} events were not read back through GET /orders/{{id}} (queue full)")
    report = assemble(
        test.metadata.name,
        ctx,
        result,
        spec.enabled_invariants(),
        timings=timings,
        notes=notes,
        orders_api=api,
        performance=[rate("total time", timings.total_s), rate("queue drain time", timings.drain_s)],
    )
    report.fault_windows = fault_windows(records, ledger, extras.selectors)
    report.schedule = schedule
    return report


async def verify_only(
    test: ChaosTest,
    database_url: str,
    *,
    sync: SyncEndpoint | None,
    run_id: str,
    ledger_paths: Sequence[Path] = (),
    ledger: Sequence[LedgerEntry] | None = None,
    since: int | None = None,
    faults: Sequence[FaultRecord] = (),
) -> Report:
    """The verification Job: what was sent comes from the spec, what was answered from the runners' ledgers
    (files, or ``ledger`` already read), the fault windows from the operator. Events are replayed from
    ``since`` (else from the ledgers' start lines, else 0)."""
    spec = test.spec
    requests = full_plan(spec.load, run_id)
    orders = order_ids(spec.load, run_id)
    if ledger_paths:
        ledger, starts = ledger_io.read(ledger_paths)
        since = since if since is not None else ledger_io.replay_from(starts)
    acked = (
        {e.webhook_id for e in ledger if e.acked}
        if ledger is not None
        else {r.webhook.webhook_id for r in requests if r.valid}
    )
    started = time.monotonic()
    timeout = parse_duration(spec.settle.timeout)
    settled = await settle(database_url, orders, len(acked), timeout)
    drain_s = time.monotonic() - started
    observed: list[Seen] | None = None
    problems: list[str] = []
    unobserved = "no sync service to observe"
    if sync:
        try:
            observed, problems = await replay(sync, orders, timeout, since or 0)
        except ReplayUnavailable as exc:
            unobserved = str(exc)
    history = await read_history(database_url, orders)
    store = await read_store(database_url, orders, [r.webhook.webhook_id for r in requests if not r.valid])
    walk, walk_problems = await final_walk(sync, len(orders)) if sync else (None, [])
    problems += walk_problems
    extras = Extras(store, walk_after=walk)
    ctx, result = judge(spec, requests, ledger, history, observed, faults, settled, extras, unobserved)
    api = await orders_api(sync, history) if sync else None
    report = assemble(
        test.metadata.name,
        ctx,
        result,
        spec.enabled_invariants(),
        timings=Timings(drain_s=round(drain_s, 3), settled=settled),
        notes=problems,
        orders_api=api,
        performance=[rate("queue drain time", round(drain_s, 3))],
    )
    report.fault_windows = fault_windows(faults, ledger or [], extras.selectors)
    return report
