"""``fincart-chaos``: validate, run (locally), load, inject, verify. Exit 0 Pass, 1 Fail, 2 Error."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from fincart_core.contracts.chaostest import ChaosTest, parse_duration
from fincart_core.contracts.report import EXIT_CODES
from fincart_core.localstack import StackError
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from fincart_chaos import ledger as ledger_io
from fincart_chaos.execution import run_test, verify_only
from fincart_chaos.faults import drop_connections
from fincart_chaos.load import run_load
from fincart_chaos.local import infrastructure, services
from fincart_chaos.report import Report, render, summary_json
from fincart_chaos.spec_io import SpecError, load_file
from fincart_chaos.workload import plan

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="FinCart chaos engine: reproducible load, faults and a Jepsen-style verdict.")
console = Console(stderr=True)
SEVERITY = ("Pass", "Inconclusive", "Fail", "Error")

FileArg = Annotated[Path, typer.Argument(help="ChaosTest YAML (one or more documents)", show_default=False)]
RunIdOpt = Annotated[str, typer.Option(envvar="FINCART_CHAOS_RUN_ID",
                                       help="suffix of the order ids, unique per run on a shared database")]


class RunReport(BaseModel):
    """``run --report``: the worst verdict and one report per ChaosTest in the file."""

    verdict: str
    reports: list[Report]


def fail(message: str, code: int = 2) -> typer.Exit:
    # unwrapped and unstyled: error lines are grepped, and YAML messages hold brackets
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _tests(path: Path) -> list[ChaosTest]:
    try:
        return load_file(path)
    except SpecError as exc:
        raise fail(str(exc)) from exc


def _write(path: Path | None, text: str) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="ChaosTest YAML files")]) -> None:
    """Check ChaosTest files against the spec; every problem names the file, document and field."""
    for path in files:
        for test in _tests(path):
            load = test.spec.load
            print(f"{path}: {test.metadata.name}: ok ({load.orders} orders x {load.updates_per_order} updates, "
                  f"{load.parallelism} runner(s), {len(test.spec.faults)} fault(s))")


@app.command()
def run(
    file: FileArg,
    local: Annotated[bool, typer.Option("--local", help="run against a local stack (required here)")] = False,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    processors: Annotated[int, typer.Option(min=1, max=16, help="processor replicas")] = 2,
    progress: Annotated[bool, typer.Option(help="show the live progress bar")] = True,
    logdir: Annotated[Path | None, typer.Option(help="service logs (default: a temporary folder)")] = None,
    keep: Annotated[bool, typer.Option(help="keep the database and streams of the run")] = False,
    via_ingress: Annotated[bool, typer.Option(
        "--via-ingress", help="send load and observer through nginx with the chart's Ingress rules")] = False,
) -> None:
    """Run every ChaosTest in FILE: start the stack, load, faults, settle, verify, report."""
    tests = _tests(file)
    if not local:
        raise fail("in a cluster, `kubectl apply -f` the file and the operator runs it; here use --local")
    logs = logdir or Path(tempfile.mkdtemp(prefix="fincart-chaos-"))
    reports: list[Report] = []
    try:
        with infrastructure() as infra:
            for test in tests:
                console.rule(f"[bold]{test.metadata.name}")
                host = test.spec.target.host_header if via_ingress else None
                with services(infra, processors, logs / test.metadata.name, keep,
                              via_ingress=via_ingress, ingress_host=host) as (endpoints, targets):
                    result = asyncio.run(run_test(test, endpoints, targets, console=console,
                                                  show_progress=progress and console.is_terminal))
                reports.append(result)
                render(result, console)
    except (StackError, OSError) as exc:
        reports.append(Report(name=tests[len(reports)].metadata.name, verdict="Error", reason=str(exc)[:2000]))
        console.print(f"[red]error:[/] {exc}")
    verdict = max((r.verdict for r in reports), key=SEVERITY.index)
    _write(report, RunReport(verdict=verdict, reports=reports).model_dump_json(indent=2))
    if verdict != "Pass":
        console.print(f"service logs: {logs}")
    raise typer.Exit(EXIT_CODES[verdict])


@app.command()
def load(
    file: FileArg,
    runner_index: Annotated[int, typer.Option(envvar="JOB_COMPLETION_INDEX", min=0,
                                              help="this runner's index (Indexed Job completion index)")] = 0,
    ingest_url: Annotated[str | None, typer.Option(help="override spec.target.ingestUrl")] = None,
    secret: Annotated[str, typer.Option(envvar="FINCART_WEBHOOK_SECRET", help="HMAC secret")] = "",
    run_id: RunIdOpt = "",
    ledger: Annotated[Path | None, typer.Option(help="write this runner's ledger (JSON lines)")] = None,
) -> None:
    """Send one runner's share of the workload; exit 0 when every valid webhook was acked."""
    tests = _tests(file)
    if len(tests) != 1:
        raise fail(f"{file}: load runs exactly one ChaosTest, found {len(tests)}")
    spec = tests[0].spec
    if not secret:
        raise fail("the webhook secret is missing: set FINCART_WEBHOOK_SECRET or --secret")
    if runner_index >= spec.load.parallelism:
        raise fail(f"--runner-index {runner_index} is out of range for parallelism {spec.load.parallelism}")
    requests = plan(spec.load, runner_index, run_id)
    started = time.monotonic()
    entries = asyncio.run(run_load(requests, ingest_url or spec.target.ingest_url, secret,
                                   concurrency=spec.load.concurrency, rate=spec.load.rate, runner=runner_index,
                                   host=spec.target.host_header))
    if ledger:
        ledger_io.write(entries, ledger)
    unacked = [e.webhook_id for e in entries if e.valid and not e.acked]
    print(json.dumps({"runner": runner_index, "sent": len(entries), "acked": sum(e.acked for e in entries),
                      "unacked": len(unacked), "samples": unacked[:10],
                      "seconds": round(time.monotonic() - started, 3)}))
    raise typer.Exit(1 if unacked else 0)


@app.command()
def inject(
    fault_type: Annotated[str, typer.Argument(metavar="TYPE", help="dbConnectionDrop")],
    duration: Annotated[str, typer.Option(help="how long the fault lasts, e.g. 10s")] = "10s",
    database_url: Annotated[str, typer.Option(envvar="FINCART_DATABASE_URL", help="FinCart's database")] = "",
) -> None:
    """Inject a fault from a pod (the operator's fault Job). Other fault types act on Kubernetes objects
    and are done by the operator itself, or by `run --local`."""
    if fault_type != "dbConnectionDrop":
        raise fail(f"inject supports dbConnectionDrop; {fault_type} is done by the operator or by run --local")
    if not database_url:
        raise fail("the database URL is missing: set FINCART_DATABASE_URL or --database-url")
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise fail(f"--duration: {exc}") from exc
    print(asyncio.run(drop_connections(database_url, seconds)))


@app.command()
def verify(
    file: FileArg,
    database_url: Annotated[str, typer.Option(envvar="FINCART_DATABASE_URL", help="FinCart's database")] = "",
    sync_url: Annotated[str | None, typer.Option(help="override spec.target.syncUrl (I6 by replay)")] = None,
    run_id: RunIdOpt = "",
    ledger: Annotated[list[Path] | None,
                      typer.Option(help="runner ledgers; without them every valid webhook counts as acked")] = None,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    summary_file: Annotated[Path | None, typer.Option(help="write the status summary here (<= 4 KiB)")] = None,
) -> None:
    """Check the invariants after a load ran elsewhere; the verdict is the exit code."""
    tests = _tests(file)
    if len(tests) != 1:
        raise fail(f"{file}: verify checks exactly one ChaosTest, found {len(tests)}")
    test = tests[0]
    if not database_url:
        raise fail("the database URL is missing: set FINCART_DATABASE_URL or --database-url")
    try:
        result = asyncio.run(verify_only(test, database_url, sync_url=sync_url or test.spec.target.sync_url,
                                         run_id=run_id, ledger_paths=ledger or []))
    except (OSError, TimeoutError, ConnectionError) as exc:  # asyncpg and websockets errors derive from these
        result = Report(name=test.metadata.name, verdict="Error", reason=f"{type(exc).__name__}: {exc}"[:2000])
    render(result, console)
    _write(report, result.model_dump_json(indent=2))
    _write(summary_file, summary_json(result))
    raise typer.Exit(EXIT_CODES[result.verdict])


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
