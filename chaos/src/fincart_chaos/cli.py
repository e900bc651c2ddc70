"""``fincart-chaos``: validate, run (locally), load, inject, verify. Exit 0 Pass, 1 Fail, 2 Error."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from fincart_core.contracts.boundaries import INGRESS_CONTROLLER_URL, Boundaries, boundary_problems
from fincart_core.contracts.chaostest import ChaosTest, parse_duration
from fincart_core.contracts.report import EXIT_CODES, FaultRecord
from fincart_core.telemetry import configure_logging
from fincart_devstack.localstack import StackError
from nats.errors import Error as NatsError
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.markup import escape
from websockets import WebSocketException

from fincart_chaos import artifacts
from fincart_chaos import ledger as ledger_io
from fincart_chaos import shrink as shrinking
from fincart_chaos.bundle import FILES, RunReport, worst, write_bundle
from fincart_chaos.execution import planned, run_test, verify_only
from fincart_chaos.faults import drop_connections
from fincart_chaos.ledger import LedgerEntry, RunnerStart
from fincart_chaos.load import run_load
from fincart_chaos.local import infrastructure, services
from fincart_chaos.observer import stream_position
from fincart_chaos.proxy import Route, serve
from fincart_chaos.report import Report, render, summary_json
from fincart_chaos.spec_io import SpecError, load_file
from fincart_chaos.sync_endpoint import SyncEndpoint
from fincart_chaos.workload import plan

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="FinCart chaos engine: reproducible load, faults and a Jepsen-style verdict.",
)
console = Console(stderr=True)
FAULT_RECORDS = TypeAdapter(list[FaultRecord])

FileArg = Annotated[Path, typer.Argument(help="ChaosTest YAML (one or more documents)", show_default=False)]
ReportDirOpt = Annotated[
    Path | None, typer.Option(help="write the evidence bundle here: report.json, report.html, junit.xml")
]
NatsUrlOpt = Annotated[str, typer.Option(envvar="FINCART_NATS_URL", help="FinCart's NATS (ledgers and bundles)")]
NatsPrefixOpt = Annotated[str, typer.Option(envvar="FINCART_NATS_PREFIX", help="FinCart's stream name prefix")]
SyncTokenOpt = Annotated[str, typer.Option(envvar="FINCART_SYNC_TOKEN", help="sync's read token (never printed)")]
RunIdOpt = Annotated[
    str,
    typer.Option(envvar="FINCART_CHAOS_RUN_ID", help="suffix of the order ids, unique per run on a shared database"),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    # unwrapped and unstyled: error lines are grepped, and YAML messages hold brackets
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _tests(path: Path) -> list[ChaosTest]:
    try:
        return load_file(path)
    except SpecError as exc:
        raise fail(str(exc)) from exc


def _one_test(path: Path, what: str) -> ChaosTest:
    """The file's only ChaosTest (``load`` and ``verify`` act on one; ``what`` names the command's job)."""
    tests = _tests(path)
    if len(tests) != 1:
        raise fail(f"{path}: {what} exactly one ChaosTest, found {len(tests)}")
    return tests[0]


def _write(path: Path | None, text: str) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def _bundle(directory: Path | None, reports: list[Report], tests: list[dict[str, Any]] | None = None) -> None:
    if directory:
        paths = write_bundle(directory, reports, tests or [])
        console.print("evidence bundle: " + ", ".join(str(p) for p in paths))


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="ChaosTest YAML files")],
    namespace: Annotated[
        str | None, typer.Option(help="also check what the tests may reach, as the operator does in this namespace")
    ] = None,
    ingest_service: Annotated[list[str] | None, typer.Option(help="allowed ingest Service (repeatable)")] = None,
    sync_service: Annotated[list[str] | None, typer.Option(help="allowed sync Service (repeatable)")] = None,
    allowed_origin: Annotated[
        list[str] | None,
        typer.Option(help="allowed origin scheme://host:port (repeatable; default: the chart's ingress controller)"),
    ] = None,
    secret: Annotated[list[str] | None, typer.Option(help="Secret the refs may name (repeatable)")] = None,
    allow_db_faults: Annotated[bool, typer.Option(help="allow dbConnectionDrop")] = False,
) -> None:
    """Check ChaosTest files against the spec; every problem names the file, document and field. With
    --namespace, also the operator's boundaries (defaults: the chart's service and Secret names)."""
    defaults = Boundaries(namespace=namespace or "")
    rules = Boundaries(
        namespace=namespace or "",
        ingest_services=frozenset(ingest_service or defaults.ingest_services),
        sync_services=frozenset(sync_service or defaults.sync_services),
        allowed_origins=frozenset(allowed_origin or (INGRESS_CONTROLLER_URL,)),
        secret_names=frozenset(secret or defaults.secret_names),
        allow_db_faults=allow_db_faults,
    )
    for path in files:
        for test in _tests(path):
            problems = boundary_problems(test.spec, rules) if namespace else []
            if problems:
                raise fail(f"{path}: {test.metadata.name}: " + "; ".join(problems))
            load = test.spec.load
            print(
                f"{path}: {test.metadata.name}: ok ({load.orders} orders x {load.updates_per_order} updates, "
                f"{load.parallelism} runner(s), {len(test.spec.faults)} fault(s))"
            )
            if test.spec.schedule:
                print(
                    f"  random schedule (seed {test.spec.schedule.seed}): "
                    + (
                        ", ".join(f"{f.name} at {f.start_after_s:g}s for {f.duration_s:g}s" for f in planned(test))
                        or "none drawn"
                    )
                )


@app.command()
def run(
    file: FileArg,
    local: Annotated[bool, typer.Option("--local", help="run against a local stack (required here)")] = False,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    processors: Annotated[int, typer.Option(min=1, max=16, help="processor replicas")] = 2,
    progress: Annotated[bool, typer.Option(help="show the live progress bar")] = True,
    logdir: Annotated[Path | None, typer.Option(help="service logs (default: a temporary folder)")] = None,
    keep: Annotated[bool, typer.Option(help="keep the database and streams of the run")] = False,
    report_dir: ReportDirOpt = None,
    via_ingress: Annotated[
        bool, typer.Option("--via-ingress", help="send load and observer through nginx with the chart's Ingress rules")
    ] = False,
) -> None:
    """Run every ChaosTest in FILE: start the stack, load, faults, settle, verify, report."""
    tests = _tests(file)
    if not local:
        raise fail("in a cluster, `kubectl apply -f` the file and the operator runs it; here use --local")
    logs = logdir or Path(tempfile.mkdtemp(prefix="fincart-chaos-"))
    reports: list[Report] = []
    try:
        with infrastructure(max(t.spec.environment.nats_nodes for t in tests)) as infra:
            for test in tests:
                console.rule(f"[bold]{test.metadata.name}")
                host = test.spec.target.host_header if via_ingress else None
                with services(
                    infra,
                    processors,
                    logs / test.metadata.name,
                    keep,
                    test=test,
                    via_ingress=via_ingress,
                    ingress_host=host,
                ) as (endpoints, targets):
                    result = asyncio.run(
                        run_test(
                            test, endpoints, targets, console=console, show_progress=progress and console.is_terminal
                        )
                    )
                reports.append(result)
                render(result, console)
    except (StackError, OSError) as exc:
        reports.append(Report(name=tests[len(reports)].metadata.name, verdict="Error", reason=str(exc)[:2000]))
        console.print(f"[red]error:[/] {exc}")
    documents = [t.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"}) for t in tests]
    verdict = worst(reports)
    _write(report, RunReport(verdict=verdict, reports=reports, tests=documents).model_dump_json(indent=2))
    _bundle(report_dir, reports, documents)
    if verdict != "Pass":
        console.print(f"service logs: {logs}")
    raise typer.Exit(EXIT_CODES[verdict])


@app.command()
def shrink(
    report_file: Annotated[Path, typer.Argument(metavar="REPORT", help="a `run --report` JSON with a Fail")],
    out: Annotated[Path | None, typer.Option(help="the small ChaosTest (default <name>-shrunk.yaml)")] = None,
    max_runs: Annotated[int, typer.Option(min=1, max=200, help="bound on the re-runs")] = 20,
    processors: Annotated[int, typer.Option(min=1, max=16, help="processor replicas")] = 2,
    logdir: Annotated[Path | None, typer.Option(help="service logs (default: a temporary folder)")] = None,
) -> None:
    """Re-run a failing test with fewer faults, shorter windows and a smaller load while it still fails on
    the same invariants; write the smallest failing ChaosTest found."""
    try:
        previous = RunReport.model_validate_json(report_file.read_text())
    except (OSError, ValidationError) as exc:
        raise fail(f"{report_file}: not a `run --report` file: {str(exc).splitlines()[0]}") from exc
    failing = [i for i, r in enumerate(previous.reports) if r.verdict == "Fail"]
    if not failing:
        raise fail(f"{report_file}: no test failed, nothing to shrink")
    if len(previous.tests) != len(previous.reports):
        raise fail(f"{report_file}: holds no ChaosTest documents (written before shrinking existed); run it again")
    try:
        test = ChaosTest.model_validate(previous.tests[failing[0]])
    except ValidationError as exc:
        raise fail(f"{report_file}: tests[{failing[0]}]: {str(exc).splitlines()[0]}") from exc
    logs = logdir or Path(tempfile.mkdtemp(prefix="fincart-shrink-"))
    runs = iter(range(1, max_runs + 1))

    def run_one(candidate: ChaosTest) -> Report:
        with services(infra, processors, logs / f"run-{next(runs)}", test=candidate) as (endpoints, targets):
            return asyncio.run(run_test(candidate, endpoints, targets, console=console, show_progress=False))

    def show(description: str, result: Report) -> None:
        kept = result.verdict == "Fail"
        console.print(f"{'[red]still fails[/]' if kept else '[green]passes[/]'}: {escape(description)}")

    try:
        with infrastructure(test.spec.environment.nats_nodes) as infra:
            result = shrinking.shrink(test, previous.reports[failing[0]], run_one, max_runs, on_step=show)
    except (StackError, OSError) as exc:
        raise fail(str(exc)) from exc
    target = out or Path(f"{test.metadata.name}-shrunk.yaml")
    note = (
        f"shrunk by `fincart-chaos shrink` from {report_file} in {result.runs} run(s): still fails "
        f"{', '.join(sorted(result.failing))}\n" + "".join(f"- {step}\n" for step in result.steps)
    )
    _write(target, shrinking.to_yaml(result.test, note).rstrip("\n"))
    console.print(f"{len(result.steps)} reduction(s) in {result.runs} run(s); wrote {target}")


# load and verify run as separate Jobs with the same NATS options; typer declares options per command.
@app.command()
def load(
    file: FileArg,
    runner_index: Annotated[
        int,
        typer.Option(envvar="JOB_COMPLETION_INDEX", min=0, help="this runner's index (Indexed Job completion index)"),
    ] = 0,
    ingest_url: Annotated[str | None, typer.Option(help="override spec.target.ingestUrl")] = None,
    secret: Annotated[str, typer.Option(envvar="FINCART_WEBHOOK_SECRET", help="HMAC secret")] = "",
    run_id: RunIdOpt = "",
    ledger: Annotated[Path | None, typer.Option(help="write this runner's ledger (JSON lines)")] = None,
    sync_url: Annotated[
        str | None,
        typer.Option(help="override spec.target.syncUrl (the stream position recorded before the first request)"),
    ] = None,
    sync_token: SyncTokenOpt = "",
    publish_ledger: Annotated[
        bool, typer.Option(help="publish the ledger to NATS for the verifier (in a cluster)")
    ] = False,
    nats_url: NatsUrlOpt = "nats://127.0.0.1:4222",
    nats_prefix: NatsPrefixOpt = "",
) -> None:
    """Send one runner's share of the workload; exit 0 when every valid webhook was acked."""
    spec = _one_test(file, "load runs").spec
    if not secret:
        raise fail("the webhook secret is missing: set FINCART_WEBHOOK_SECRET or --secret")
    if runner_index >= spec.load.parallelism:
        raise fail(f"--runner-index {runner_index} is out of range for parallelism {spec.load.parallelism}")
    requests = plan(spec.load, runner_index, run_id)
    sync = _sync_endpoint(sync_url or spec.target.sync_url, sync_token, spec.target.host_header)
    start = ledger_io.RunnerStart(runner=runner_index, stream_seq=_stream_position(sync))
    started = time.monotonic()
    entries = asyncio.run(
        run_load(
            requests,
            ingest_url or spec.target.ingest_url,
            secret,
            concurrency=spec.load.concurrency,
            rate=spec.load.rate,
            runner=runner_index,
            host=spec.target.host_header,
        )
    )
    if ledger:
        ledger_io.write(entries, ledger, start)
    if publish_ledger:
        try:
            asyncio.run(artifacts.publish_ledger(nats_url, nats_prefix, run_id, start, entries))
        except (OSError, TimeoutError, NatsError) as exc:
            raise fail(f"could not publish the ledger to {nats_url}: {type(exc).__name__}: {exc}") from exc
    unacked = [e.webhook_id for e in entries if e.valid and not e.acked]
    print(
        json.dumps(
            {
                "runner": runner_index,
                "sent": len(entries),
                "acked": sum(e.acked for e in entries),
                "unacked": len(unacked),
                "samples": unacked[:10],
                "seconds": round(time.monotonic() - started, 3),
            }
        )
    )
    raise typer.Exit(1 if unacked else 0)


def _sync_endpoint(url: str | None, token: str, host: str | None) -> SyncEndpoint | None:
    return SyncEndpoint(url, token, host) if url else None


def _stream_position(sync: SyncEndpoint | None) -> int | None:
    """Where ORDER_EVENTS stands before the load, so the verifier replays from there (None: unknown)."""
    if sync is None:
        return None
    try:
        return asyncio.run(stream_position(sync))
    except (OSError, TimeoutError, ConnectionError, WebSocketException) as exc:
        console.print(
            f"[yellow]warning:[/] stream position unknown ({type(exc).__name__}: {escape(str(exc))}); "
            "the verifier will replay the events from 0"
        )
        return None


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
def proxy(
    route: Annotated[list[str], typer.Option(help="NAME=LISTEN_HOST:PORT=UPSTREAM_HOST:PORT, repeatable")],
    control: Annotated[str, typer.Option(help="HOST:PORT of the control API")] = "0.0.0.0:8474",
    seed: Annotated[int | None, typer.Option(help="seed of the per-connection draws")] = None,
) -> None:
    """Run the TCP fault proxy: forward each route, take faults over HTTP (PUT/DELETE /faults/NAME)."""
    try:
        routes = [Route.parse(r) for r in route]
    except ValueError as exc:
        raise fail(f"--route: {exc}") from exc
    host, _, port = control.rpartition(":")
    if not host or not port.isdigit():
        raise fail(f"--control: {control!r}: use HOST:PORT")
    configure_logging(os.environ.get("FINCART_LOG_LEVEL", "INFO"))
    asyncio.run(serve(routes, host, int(port), seed=seed))


@app.command()
def verify(
    file: FileArg,
    database_url: Annotated[str, typer.Option(envvar="FINCART_DATABASE_URL", help="FinCart's database")] = "",
    sync_url: Annotated[str | None, typer.Option(help="override spec.target.syncUrl (I6 by replay)")] = None,
    sync_token: SyncTokenOpt = "",
    run_id: RunIdOpt = "",
    ledger: Annotated[
        list[Path] | None, typer.Option(help="runner ledgers; without them every valid webhook counts as acked")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    summary_file: Annotated[Path | None, typer.Option(help="write the status summary here (<= 4 KiB)")] = None,
    report_dir: ReportDirOpt = None,
    faults: Annotated[
        str,
        typer.Option(
            envvar="FINCART_CHAOS_FAULTS",
            help="the fault windows as a JSON list of FaultRecord (the operator passes them), for the coverage check",
        ),
    ] = "[]",
    since: Annotated[
        int | None,
        typer.Option(
            min=0, help="replay the events after this stream sequence (default: the ledgers' start lines, else 0)"
        ),
    ] = None,
    ledger_from_nats: Annotated[bool, typer.Option(help="read the runners' ledgers from NATS (in a cluster)")] = False,
    publish_bundle: Annotated[bool, typer.Option(help="store the evidence bundle in NATS' object store")] = False,
    nats_url: NatsUrlOpt = "nats://127.0.0.1:4222",
    nats_prefix: NatsPrefixOpt = "",
) -> None:
    """Check the invariants after a load ran elsewhere; the verdict is the exit code."""
    test = _one_test(file, "verify checks")
    if not database_url:
        raise fail("the database URL is missing: set FINCART_DATABASE_URL or --database-url")
    try:
        windows = FAULT_RECORDS.validate_json(faults)
    except ValidationError as exc:
        raise fail(f"--faults: not a JSON list of fault records: {exc.errors()[0]['msg']}") from exc
    try:
        entries: list[LedgerEntry] | None = None
        starts: list[RunnerStart] = []
        if ledger_from_nats:
            entries, starts, missing = asyncio.run(
                artifacts.read_ledgers(nats_url, nats_prefix, run_id, test.spec.load.parallelism)
            )
            if missing:
                console.print(f"[yellow]warning:[/] no whole ledger from runner(s) {missing}: I7 cannot be checked")
                entries = None
        result = asyncio.run(
            verify_only(
                test,
                database_url,
                sync=_sync_endpoint(sync_url or test.spec.target.sync_url, sync_token, test.spec.target.host_header),
                run_id=run_id,
                ledger_paths=ledger or [],
                ledger=entries,
                faults=windows,
                since=since if since is not None or entries is None else ledger_io.replay_from(starts),
            )
        )
    except (OSError, TimeoutError, ConnectionError, NatsError) as exc:  # asyncpg and websockets errors: OSError...
        result = Report(name=test.metadata.name, verdict="Error", reason=f"{type(exc).__name__}: {exc}"[:2000])
    render(result, console)
    _write(report, result.model_dump_json(indent=2))
    if publish_bundle:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                files = {p.name: p.read_bytes() for p in write_bundle(Path(tmp), [result])}
                result.bundle = asyncio.run(artifacts.put_bundle(nats_url, nats_prefix, run_id, files))
            except (OSError, TimeoutError, NatsError) as exc:  # the verdict stands without its bundle
                result.notes.append(f"the evidence bundle could not be stored: {type(exc).__name__}: {exc}")
    _write(summary_file, summary_json(result))
    _bundle(report_dir, [result])
    raise typer.Exit(EXIT_CODES[result.verdict])


@app.command("fetch-bundle")
def fetch_bundle(
    run_id: Annotated[str, typer.Argument(help="the run id (the ChaosTest status names it under bundle)")],
    out: Annotated[Path, typer.Option(help="directory for report.json, report.html, junit.xml")] = Path("."),
    nats_url: NatsUrlOpt = "nats://127.0.0.1:4222",
    nats_prefix: NatsPrefixOpt = "",
) -> None:
    """Get a cluster run's evidence bundle from NATS' object store."""
    try:
        files = asyncio.run(artifacts.fetch_bundle(nats_url, nats_prefix, run_id, FILES))
    except (OSError, TimeoutError, NatsError) as exc:
        raise fail(f"could not fetch the bundle of run {run_id}: {type(exc).__name__}: {exc}") from exc
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
        print(out / name)


@app.command("report")
def report_command(
    source: Annotated[Path, typer.Argument(help="a JSON report (run --report, verify --report, report.json)")],
    report_dir: Annotated[Path, typer.Option(help="write report.json, report.html, junit.xml here")],
) -> None:
    """Render the evidence bundle (HTML, JUnit) from a JSON report written earlier."""
    try:
        text = source.read_text()
        reports = (
            RunReport.model_validate_json(text).reports
            if '"reports"' in text[:200]
            else [Report.model_validate_json(text)]
        )
    except (OSError, ValidationError) as exc:
        raise fail(f"{source}: not a readable report: {exc}") from exc
    _bundle(report_dir, reports)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
