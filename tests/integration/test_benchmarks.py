"""The benchmarks still run end to end (tiny sizes). Figures are never asserted here, only that they are there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fincart_devstack.localstack import Infra

PIPELINE = Path(__file__).parents[2] / "benchmarks" / "pipeline.py"
SYNC = PIPELINE.with_name("sync.py")
KEYS = (
    "bare_fastapi_rps",
    "ingest_rps",
    "ingest_ratio",
    "ingest_p50_ms",
    "ingest_p99_ms",
    "raw_upsert_rps",
    "drain_rps",
    "drain_rps_1",
    "drain_rps_2",
    "baseline_rps",
    "drain_ratio",
    "baseline_ackall_rps",
    "ackall_speedup",
    "processor_peak_rss_mb",
    "seed_answer_s",
    "seed_drain_s",
)
# CPU time is counted in clock ticks (10 ms): a tiny drain may take less than one
CPU_KEYS = ("us_per_webhook", "baseline_us_per_webhook", "baseline_ackall_us_per_webhook")
# sizes in MiB (rounded) and CPU in ticks may be 0 at tiny sizes
SCALE_KEYS = ("us_per_webhook", "orders_table_mb", "orders_indexes_mb", "audit_table_mb", "audit_indexes_mb")


def env_of(infra: Infra) -> dict[str, str]:
    return {
        **os.environ,
        "FINCART_NATS_URL": infra.nats_url,
        "FINCART_REDIS_URL": infra.redis_url,
        "FINCART_DATABASE_URL": infra.database_url,
    }


def bench(script: Path, *args: str, env: dict[str, str], timeout: float = 240) -> list[dict[str, Any]]:
    """Run a benchmark script (it must exit 0); the JSON objects it printed, a line each, after its tables."""
    done = subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_pipeline_benchmark_reports_every_figure(infra: Infra):
    """Ingest vs bare FastAPI, the processor vs the same-work baseline (per-message acks and AckAll), seed."""
    lines = bench(
        PIPELINE,
        "--webhooks",
        "200",
        "--warmup",
        "20",
        "--orders",
        "50",
        "--seed-webhooks",
        "10",
        "--concurrency",
        "8",
        env=env_of(infra),
    )
    result = lines[-1]
    assert {
        key: result.get(key) for key in KEYS if not (isinstance(result.get(key), int | float) and result[key] > 0)
    } == {}
    assert {
        key: result.get(key) for key in CPU_KEYS if not (isinstance(result.get(key), int | float) and result[key] >= 0)
    } == {}


def test_scale_mode_reports_each_backlog(infra: Infra):
    """--scale: one JSON line per backlog, the orders table growing by each."""
    steps = bench(PIPELINE, "--scale", "--scale-sizes", "100,200", env=env_of(infra))
    assert [(s["backlog"], s["orders_rows"]) for s in steps] == [(100, 100), (200, 300)]
    for step in steps:
        assert step["drain_rps"] > 0 and step["p99_batch_apply_ms"] > 0 and step["processor_peak_rss_mb"] > 0, step
        assert {
            key: step.get(key) for key in SCALE_KEYS if not (isinstance(step.get(key), int | float) and step[key] >= 0)
        } == {}


def test_ack_policies_mode_reports_both_policies(infra: Infra):
    """--ack-policies: explicit and AckAll in turns, medians and ratios (its own embedded nats-server)."""
    lines = bench(PIPELINE, "--ack-policies", "--webhooks", "200", "--rounds", "2", env=env_of(infra))
    result = lines[-1]
    for policy in ("explicit", "all"):
        assert result[f"{policy}_drain_rps"] > 0, result
        for key in ("us_per_webhook", "nats_us_per_webhook", "postgres_us_per_webhook"):
            assert result[f"{policy}_{key}"] >= 0, result
    assert result["drain_rps_ratio"] > 0, result


def test_sync_scale_mode_reports_each_client_count(infra: Infra):
    """sync.py --scale: one JSON line per client count, with RSS per client, every frame received."""
    steps = bench(
        SYNC,
        "--scale",
        "20,40",
        "--firehose",
        "2",
        "--rate",
        "50",
        "--duration",
        "1",
        "--drain",
        "1",
        env=env_of(infra),
    )
    assert [s["clients"] for s in steps] == [20, 40]
    for step in steps:
        assert step["frames_received"] == step["frames_expected"] > 0, step
        assert step["p99_ms"] > 0 and step["sync_peak_rss_mb"] > 0 and "rss_kb_per_client" in step, step


def test_sync_cost_mode_reports_each_broker(infra: Infra):
    """--sync-cost: ingest against its own brokers (default fsync, sync_interval: always, a 3-node cluster)."""
    env = {k: v for k, v in env_of(infra).items() if k != "FINCART_NATS_URL"}
    lines = bench(
        PIPELINE,
        "--sync-cost",
        "--cluster",
        "--rounds",
        "1",
        "--webhooks",
        "100",
        "--warmup",
        "10",
        "--concurrency",
        "8",
        env=env,
        timeout=300,
    )
    result = lines[-1]
    for broker in ("default", "always", "cluster"):
        assert result[f"{broker}_rps"] > 0 and result[f"{broker}_ratio"] > 0, result
    assert result["default_ratio"] == 1.0


INGRESS = PIPELINE.with_name("ingress.py")
INGRESS_KEYS = ("direct_p50_ms", "direct_p99_ms", "ingress_p50_ms", "ingress_p99_ms", "direct_rps", "ingress_rps")


def test_ingress_benchmark_reports_every_figure(infra: Infra):
    lines = bench(INGRESS, "--requests", "20", "--rounds", "1", "--concurrency", "1,4", env=env_of(infra), timeout=120)
    result = lines[-1]
    for level in ("c1", "c4"):
        assert {key: result[level].get(key) for key in INGRESS_KEYS if not result[level].get(key, 0) > 0} == {}
        assert result[level]["requests_per_mode"] == 20
