"""The pipeline benchmark still runs end to end (tiny sizes, ~12 s). Figures are never asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fincart_devstack.localstack import Infra

PIPELINE = Path(__file__).parents[2] / "benchmarks" / "pipeline.py"
KEYS = ("bare_fastapi_rps", "ingest_rps", "ingest_ratio", "ingest_p50_ms", "ingest_p99_ms", "raw_upsert_rps",
        "drain_rps", "drain_rps_1", "drain_rps_2", "drain_ratio", "seed_answer_s", "seed_drain_s")


def test_pipeline_benchmark_reports_every_figure(infra: Infra):
    env = {**os.environ, "FINCART_NATS_URL": infra.nats_url, "FINCART_REDIS_URL": infra.redis_url,
           "FINCART_DATABASE_URL": infra.database_url}
    done = subprocess.run(
        [sys.executable, str(PIPELINE), "--webhooks", "200", "--warmup", "20", "--orders", "50",
         "--seed-webhooks", "10", "--concurrency", "8"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {key: result.get(key) for key in KEYS if not (isinstance(result.get(key), int | float)
                                                          and result[key] > 0)} == {}


def test_sync_cost_mode_reports_each_broker(infra: Infra):
    """--sync-cost: ingest against its own brokers (default fsync, sync_interval: always, a 3-node cluster)."""
    env = {**os.environ, "FINCART_REDIS_URL": infra.redis_url, "FINCART_DATABASE_URL": infra.database_url}
    done = subprocess.run(
        [sys.executable, str(PIPELINE), "--sync-cost", "--cluster", "--rounds", "1", "--webhooks", "100",
         "--warmup", "10", "--concurrency", "8"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for broker in ("default", "always", "cluster"):
        assert result[f"{broker}_rps"] > 0 and result[f"{broker}_ratio"] > 0, result
    assert result["default_ratio"] == 1.0


INGRESS = PIPELINE.with_name("ingress.py")
INGRESS_KEYS = ("direct_p50_ms", "direct_p99_ms", "ingress_p50_ms", "ingress_p99_ms", "direct_rps", "ingress_rps")


def test_ingress_benchmark_reports_every_figure(infra: Infra):
    env = {**os.environ, "FINCART_NATS_URL": infra.nats_url, "FINCART_REDIS_URL": infra.redis_url,
           "FINCART_DATABASE_URL": infra.database_url}
    done = subprocess.run([sys.executable, str(INGRESS), "--requests", "20", "--rounds", "1", "--concurrency", "1,4"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for level in ("c1", "c4"):
        assert {key: result[level].get(key) for key in INGRESS_KEYS if not result[level].get(key, 0) > 0} == {}
        assert result[level]["requests_per_mode"] == 20
