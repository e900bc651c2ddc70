"""Prometheus metrics of the chaos runs (no label per test or order: cardinality stays fixed) and the operator's
one HTTP port: /metrics and /healthz (liveness: the event loop that runs kopf answers)."""

from __future__ import annotations

from typing import get_args

from aiohttp import web
from fincart_core.contracts.chaostest import TERMINAL_PHASES, ChaosTestStatus, FaultType, Invariant
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from fincart_operator.reconcile import parse_time

RUNS = Counter("chaostest_runs", "Finished chaos tests by verdict (Aborted when stopped)", ["verdict"])
DURATION = Histogram(
    "chaostest_duration_seconds",
    "Start to finish of a chaos test",
    buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800),
)
VIOLATIONS = Counter("chaostest_invariant_violations", "Anomalies found by the verifier", ["invariant"])
FAULTS = Counter("chaostest_fault_injections", "Fault occurrences by outcome", ["type", "result"])
WEBHOOKS = Counter("chaostest_webhooks_sent", "Webhooks the load runners sent (counted when a test is verified)")
ACTIVE = Gauge("chaostest_active", "Chaos tests this operator is running (not finished)")

# Every verdict and fault outcome is exported at 0 from the start: a series that first appears at 1 has no
# increase() in Prometheus, so the first Fail after a restart would not fire FinCartChaosTestFailed.
for _verdict in ("Pass", "Fail", "Inconclusive", "Error", "Aborted"):
    RUNS.labels(verdict=_verdict)
for _invariant in get_args(Invariant):
    if _invariant != "all":  # a spec shorthand, never counted
        VIOLATIONS.labels(invariant=_invariant)
for _type in get_args(FaultType):
    for _result in ("injected", "healed", "failed", "skipped"):
        FAULTS.labels(type=_type, result=_result)

_active: set[str] = set()
ACTIVE.set_function(lambda: len(_active))


def track(key: str, status: ChaosTestStatus | None) -> None:
    """Count a test as active while it is not finished; None: the operator stopped looking at it."""
    if status is not None and status.phase not in TERMINAL_PHASES:
        _active.add(key)
    else:
        _active.discard(key)


def record(old: ChaosTestStatus, new: ChaosTestStatus) -> None:
    """Count what changed between two statuses the operator wrote."""
    before = {f.name: f.result for f in old.faults}
    for fault in new.faults:
        if fault.result != "scheduled" and before.get(fault.name) != fault.result:
            FAULTS.labels(type=fault.type, result=fault.result).inc()
    if old.phase in TERMINAL_PHASES or new.phase not in TERMINAL_PHASES:
        return
    RUNS.labels(verdict=new.verdict or new.phase).inc()
    start, end = parse_time(new.start_time), parse_time(new.completion_time)
    if start and end:
        DURATION.observe((end - start).total_seconds())
    for anomaly in new.anomalies:
        VIOLATIONS.labels(invariant=anomaly.invariant).inc(anomaly.count)
    WEBHOOKS.inc(new.counts.sent)


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve(host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the HTTP endpoint; returns its runner (to clean up) and the bound port (port 0 picks one)."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]
