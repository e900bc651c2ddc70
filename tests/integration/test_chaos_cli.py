"""``fincart-chaos`` as users run it: real processes, real NATS JetStream, Redis and PostgreSQL.

``run --local`` on the examples (seed, stress, faults) must end with Pass; the cluster half
(``load`` per runner, ``inject``, ``verify`` writing the operator's summary) works against a stack
started here; spec errors exit 2 with a message that names the field.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fincart_chaos.observer import stream_position
from fincart_chaos.sync_endpoint import SyncEndpoint
from fincart_core.contracts.report import ReportSummary
from fincart_devstack.devstack import DevStack, StackConfig
from fincart_devstack.localstack import Infra, find_binary

from tests.integration.test_chaos_artifacts import drop_artifacts

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RUN_TIMEOUT_S = 600


def chaos(
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = RUN_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FINCART_")}
    return subprocess.run(
        [find_binary("fincart-chaos"), *map(str, args)],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def infra_env(infra: Infra, *kinds: str) -> dict[str, str]:
    urls = {"nats": infra.nats_url, "redis": infra.redis_url, "postgres": infra.database_url}
    names = {"nats": "FINCART_NATS_URL", "redis": "FINCART_REDIS_URL", "postgres": "FINCART_DATABASE_URL"}
    return {names[k]: urls[k] for k in kinds} | {"FINCART_PARTITIONS": "4"}


def run_report(path: Path, tmp_path: Path, env: dict[str, str]) -> dict:
    out = tmp_path / "report.json"
    done = chaos(
        "run",
        path,
        "--local",
        "--report",
        out,
        "--logdir",
        tmp_path / "logs",
        "--report-dir",
        tmp_path / "bundle",
        env=env,
    )
    assert out.exists(), done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert done.returncode == 0, (report["verdict"], report["reports"][0].get("anomalies"), done.stderr[-3000:])
    return report["reports"][0]


def test_the_seed_scenario_passes_with_every_checklist_item(infra: Infra, tmp_path: Path):
    report = run_report(EXAMPLES / "chaostest-seed.yaml", tmp_path, infra_env(infra, "nats", "redis", "postgres"))
    assert report["verdict"] == "Pass"
    assert report["counts"] | {"stale_overwrites": 0} == {
        "sent": 105,
        "acked": 100,
        "rejected": 5,
        "stored": 100,
        "lost": 0,
        "duplicated": 0,
        "unexpected": 0,
        "stale_overwrites": 0,
        "unknown": 0,
        "recovered": 0,
    }
    assert [c["ok"] for c in report["checklist"]] == [True] * 10, report["checklist"]
    assert report["checked"] == ["I1", "I2", "I3", "I4", "I5", "I6", "I7"]
    assert {r["metric"] for r in report["performance"]} == {"total time", "queue drain time"}
    assert report["timings"]["settled"] and report["timings"]["ack_latency_ms"]["p99"] is not None


def test_the_stress_run_passes(infra: Infra, tmp_path: Path):
    report = run_report(EXAMPLES / "chaostest-stress.yaml", tmp_path, infra_env(infra, "nats", "redis", "postgres"))
    counts = report["counts"]
    assert report["verdict"] == "Pass" and counts["stored"] == 10_000
    # forged signatures 401, poison 422, duplicates 200
    assert counts["rejected"] == 200 and counts["acked"] == 10_500


def test_the_faults_example_passes_and_heals_every_fault(infra: Infra, tmp_path: Path):
    # NATS and Redis are started by the run itself, so it may restart and stop them
    report = run_report(EXAMPLES / "chaostest-faults.yaml", tmp_path, infra_env(infra, "postgres"))
    assert report["verdict"] == "Pass" and report["counts"]["lost"] == 0 and report["counts"]["duplicated"] == 0
    assert sorted((f["type"], f["result"]) for f in report["faults"]) == [
        ("brokerRestart", "healed"),
        ("dbConnectionDrop", "healed"),
        ("podKill", "healed"),
        ("processorPause", "healed"),
        ("redisOutage", "healed"),
    ]
    assert all(f["healed_at"] > f["started_at"] for f in report["faults"])
    # NATS stays down longer than ingest's publish timeout: requests fail with 503 and are retried
    nats = next(w for w in report["fault_windows"] if w["type"] == "brokerRestart")
    assert nats["failed"] >= 1 and nats["retried"] >= 1
    # every fault hit webhooks in flight, and the evidence bundle is written next to the JSON
    assert report["inconclusive"] == [] and report["outcomes"]["lost"] == report["outcomes"]["unexpected"] == 0
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["junit.xml", "report.html", "report.json"]
    page = (tmp_path / "bundle" / "report.html").read_text()
    assert all(f"{f['name']} ({f['type']})" in page for f in report["faults"])


@pytest.fixture
def stack(infra: Infra, unique_name: str, tmp_path: Path) -> Iterator[DevStack]:
    config = StackConfig(
        database=unique_name,
        partitions=4,
        processors=1,
        nats_prefix=unique_name[:20],
        webhook_secret="cluster-secret",
        ingest_port=0,
        sync_port=0,
    )
    dev = DevStack(config, infra, tmp_path)
    dev.start()
    yield dev
    dev.stop()


def test_the_cluster_commands_load_inject_and_verify(stack: DevStack, tmp_path: Path):
    spec = tmp_path / "two-runners.yaml"
    # two runners; a short settle, since the last verify below waits for rows that never come
    small = (EXAMPLES / "chaostest-small.yaml").read_text()
    spec.write_text(small.replace("concurrency: 10", "parallelism: 2\n    concurrency: 10").replace("30s", "5s"))
    env = {"FINCART_WEBHOOK_SECRET": "cluster-secret", "FINCART_CHAOS_RUN_ID": "run1"}
    for index in (0, 1):
        done = chaos(
            "load",
            spec,
            "--ingest-url",
            stack.ingest_url,
            "--ledger",
            tmp_path / f"ledger-{index}.jsonl",
            env={**env, "JOB_COMPLETION_INDEX": str(index)},
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["acked"] == 5
    dropped = chaos("inject", "dbConnectionDrop", "--duration", "1s", env={"FINCART_DATABASE_URL": stack.database_url})
    assert dropped.returncode == 0 and "terminated" in dropped.stdout, dropped.stderr
    summary = tmp_path / "termination-log"
    verify_env = {**env, "FINCART_DATABASE_URL": stack.database_url, "FINCART_SYNC_TOKEN": stack.config.read_token}
    done = chaos(
        "verify",
        spec,
        "--sync-url",
        stack.sync_url,
        "--summary-file",
        summary,
        "--ledger",
        tmp_path / "ledger-0.jsonl",
        "--ledger",
        tmp_path / "ledger-1.jsonl",
        env=verify_env,
    )
    assert done.returncode == 0, done.stderr
    result = ReportSummary.model_validate_json(summary.read_text())
    assert result.verdict == "Pass" and result.counts.stored == 10 and result.counts.acked == 10
    # without ledgers every valid webhook counts as acked, but I7 is not checked: Inconclusive, never Pass
    done = chaos("verify", spec, "--sync-url", stack.sync_url, "--summary-file", summary, env=verify_env)
    unproven = ReportSummary.model_validate_json(summary.read_text())
    assert done.returncode == 1 and unproven.verdict == "Inconclusive" and not unproven.anomalies
    assert [a.invariant for a in unproven.inconclusive] == ["I7"]
    # another run id: none of its webhooks are stored, they are all lost
    done = chaos(
        "verify",
        spec,
        "--sync-url",
        stack.sync_url,
        "--summary-file",
        summary,
        env={**verify_env, "FINCART_CHAOS_RUN_ID": "other"},
    )
    failed = ReportSummary.model_validate_json(summary.read_text())
    assert done.returncode == 1 and failed.verdict == "Fail" and failed.counts.lost == 10
    assert "I5" in {a.invariant for a in failed.anomalies}


@pytest.fixture
def nats_artifacts(stack: DevStack) -> Iterator[None]:
    yield
    asyncio.run(drop_artifacts(stack.infra.nats_url, stack.config.nats_prefix))


@pytest.mark.usefixtures("nats_artifacts")
def test_in_a_cluster_the_ledgers_and_the_bundle_travel_through_nats(stack: DevStack, tmp_path: Path):
    """The operator's way: runners publish their ledgers, the verifier reads them (so I7 is checked), gets the
    fault windows from the environment and stores the evidence bundle in NATS' object store."""
    spec = tmp_path / "two-runners.yaml"
    small = (EXAMPLES / "chaostest-small.yaml").read_text()
    spec.write_text(small.replace("concurrency: 10", "parallelism: 2\n    concurrency: 10").replace("30s", "10s"))
    nats = {
        "FINCART_NATS_URL": stack.infra.nats_url,
        "FINCART_NATS_PREFIX": stack.config.nats_prefix,
        "FINCART_CHAOS_RUN_ID": "nats1",
    }
    token = {"FINCART_SYNC_TOKEN": stack.config.read_token}  # the runners' and the verifier's --sync-url need it
    started = time.time()
    for index in (0, 1):
        done = chaos(
            "load",
            spec,
            "--ingest-url",
            stack.ingest_url,
            "--sync-url",
            stack.sync_url,
            "--publish-ledger",
            env={**nats, **token, "FINCART_WEBHOOK_SECRET": "cluster-secret", "JOB_COMPLETION_INDEX": str(index)},
        )
        assert done.returncode == 0, done.stderr
    window = [
        {
            "name": "during-the-load",
            "type": "podKill",
            "started_at": started,
            "healed_at": time.time(),
            "result": "healed",
        }
    ]
    summary = tmp_path / "summary.json"
    done = chaos(
        "verify",
        spec,
        "--sync-url",
        stack.sync_url,
        "--ledger-from-nats",
        "--publish-bundle",
        "--summary-file",
        summary,
        env={
            **nats,
            **token,
            "FINCART_DATABASE_URL": stack.database_url,
            "FINCART_CHAOS_FAULTS": json.dumps(window),
        },
    )
    result = ReportSummary.model_validate_json(summary.read_text())
    assert done.returncode == 0 and result.verdict == "Pass", (result, done.stderr[-3000:])
    assert (result.counts.sent, result.counts.acked) == (10, 10) and result.faults[0].name == "during-the-load"
    assert result.bundle and "fincart-chaos fetch-bundle nats1" in result.bundle
    done = chaos("fetch-bundle", "nats1", "--out", tmp_path / "bundle", env=nats)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "bundle" / "report.json").read_text())["reports"][0]
    assert report["checked"] == ["I1", "I2", "I3", "I4", "I5", "I6", "I7"] and report["outcomes"]["stored"] == 10
    assert "during-the-load (podKill)" in (tmp_path / "bundle" / "report.html").read_text()
    assert "<testsuite" in (tmp_path / "bundle" / "junit.xml").read_text()
    # another run id: no ledger was published for it, so I7 cannot be checked (and everything is lost)
    done = chaos(
        "verify",
        spec,
        "--sync-url",
        stack.sync_url,
        "--ledger-from-nats",
        "--summary-file",
        summary,
        env={**nats, **token, "FINCART_DATABASE_URL": stack.database_url, "FINCART_CHAOS_RUN_ID": "nothing"},
    )
    assert done.returncode == 1 and "no whole ledger from runner(s) [0, 1]" in done.stderr, done.stderr[:3000]


REPLAY_MAX_EVENTS = 20


@pytest.fixture
def short_replay_stack(infra: Infra, unique_name: str, tmp_path: Path) -> Iterator[DevStack]:
    """A sync service that replays at most 20 events: a long-lived stream, scaled down."""
    config = StackConfig(
        database=unique_name,
        partitions=4,
        processors=1,
        nats_prefix=unique_name[:20],
        webhook_secret="cluster-secret",
        ingest_port=0,
        sync_port=0,
        extra_env={"FINCART_REPLAY_MAX_EVENTS": str(REPLAY_MAX_EVENTS)},
    )
    dev = DevStack(config, infra, tmp_path)
    dev.start()
    yield dev
    dev.stop()


def test_the_verifier_replays_events_from_the_runs_start_not_from_0(short_replay_stack: DevStack, tmp_path: Path):
    stack = short_replay_stack
    spec = tmp_path / "small.yaml"
    spec.write_text((EXAMPLES / "chaostest-small.yaml").read_text().replace("30s", "10s"))
    env = {"FINCART_WEBHOOK_SECRET": "cluster-secret", "FINCART_SYNC_TOKEN": stack.config.read_token}
    # an earlier run fills the stream past what one replay may cover: 5 orders x 10 updates in order, 50 events
    # (no poison nor ties, which the example has, and one request at a time, so none arrives out of order:
    # each update is a new version)
    earlier = tmp_path / "earlier.yaml"
    earlier.write_text(
        spec.read_text()
        .replace("orders: 1", "orders: 5")
        .replace("tieRatio: 0.2", "tieRatio: 0")
        .replace("poisonRatio: 0.1", "poisonRatio: 0")
        .replace("seed: 7", "seed: 7\n    outOfOrderRatio: 0")
        .replace("concurrency: 10", "concurrency: 1")
    )
    assert "poisonRatio: 0\n" in earlier.read_text() and "tieRatio: 0\n" in earlier.read_text()
    done = chaos("load", earlier, "--ingest-url", stack.ingest_url, env={**env, "FINCART_CHAOS_RUN_ID": "earlier"})
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 60
    while asyncio.run(stream_position(SyncEndpoint(stack.sync_url, stack.config.read_token))) < 50:
        assert time.monotonic() < deadline, "the earlier run's events were never published"
        time.sleep(0.2)
    ledger = tmp_path / "ledger-0.jsonl"
    done = chaos(
        "load",
        spec,
        "--ingest-url",
        stack.ingest_url,
        "--sync-url",
        stack.sync_url,
        "--ledger",
        ledger,
        env={**env, "FINCART_CHAOS_RUN_ID": "now"},
    )
    assert done.returncode == 0, done.stderr
    start = json.loads(ledger.read_text().splitlines()[0])
    assert start["runner"] == 0 and start["stream_seq"] > REPLAY_MAX_EVENTS  # the earlier runs' events
    summary = tmp_path / "summary.json"
    verify_env = {**env, "FINCART_CHAOS_RUN_ID": "now", "FINCART_DATABASE_URL": stack.database_url}
    done = chaos(
        "verify", spec, "--sync-url", stack.sync_url, "--ledger", ledger, "--summary-file", summary, env=verify_env
    )
    result = ReportSummary.model_validate_json(summary.read_text())
    assert done.returncode == 0 and result.verdict == "Pass", (result, done.stderr[-2000:])
    # from 0 the sync service answers with a snapshot: I6 cannot be checked, which is no false gap
    done = chaos(
        "verify",
        spec,
        "--sync-url",
        stack.sync_url,
        "--ledger",
        ledger,
        "--since",
        "0",
        "--summary-file",
        summary,
        env=verify_env,
    )
    result = ReportSummary.model_validate_json(summary.read_text())
    assert done.returncode == 1 and result.verdict == "Inconclusive" and not result.anomalies
    assert [a.invariant for a in result.inconclusive] == ["I6"], result.inconclusive
    assert "since_too_far_back" in result.inconclusive[0].message


BAD_SPECS = {
    "bad ratio": ("duplicateRatio: 0.0", "duplicateRatio: 1.5", "spec.load.duplicateRatio"),
    "unknown fault type": ("faults: []", "faults: [{name: f, type: meteorStrike}]", "spec.faults.0.type"),
    "missing target": ("  target:\n", "  targetz:\n", "spec.target"),
    "bad duration": ("timeout: 30s", "timeout: soon", "spec.settle.timeout"),
}
BASE_SPEC = """apiVersion: chaos.fincart.io/v1alpha1
kind: ChaosTest
metadata: {name: t}
spec:
  target:
    ingestUrl: http://localhost:8080
  load: {orders: 1, updatesPerOrder: 3, duplicateRatio: 0.0}
  faults: []
  settle: {timeout: 30s}
"""


@pytest.mark.parametrize("case", BAD_SPECS, ids=list(BAD_SPECS))
def test_spec_errors_exit_2_naming_the_field(case: str, tmp_path: Path):
    old, new, field = BAD_SPECS[case]
    assert old in BASE_SPEC
    path = tmp_path / "bad.yaml"
    path.write_text(BASE_SPEC.replace(old, new))
    for command in (("validate", path), ("run", path, "--local"), ("load", path), ("verify", path)):
        done = chaos(*command, timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert field in done.stderr and str(path) in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_usage_errors_exit_2(tmp_path: Path):
    path = tmp_path / "ok.yaml"
    path.write_text(BASE_SPEC)
    assert chaos("validate", path).returncode == 0
    cases = {
        ("validate", tmp_path / "missing.yaml"): "cannot read",
        ("run", path): "--local",
        ("load", path): "FINCART_WEBHOOK_SECRET",
        ("load", path, "--secret", "s", "--runner-index", "3"): "out of range",
        ("verify", path): "FINCART_DATABASE_URL",
        ("inject", "podKill"): "operator",
    }
    for command, message in cases.items():
        done = chaos(*command, timeout=60)
        assert done.returncode == 2 and message in done.stderr, (command, done.stderr)
    path.write_text("kind: [unclosed")
    done = chaos("validate", path)
    assert done.returncode == 2 and "not valid YAML" in done.stderr


def test_the_console_script_is_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "fincart_chaos", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "validate" in done.stdout and "verify" in done.stdout
