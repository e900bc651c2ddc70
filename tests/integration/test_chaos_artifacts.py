"""Cluster runs' evidence through real NATS JetStream: runner ledgers (whole or cut) and the evidence bundle."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats
import pytest
from fincart_chaos import artifacts
from fincart_chaos.ledger import LedgerEntry, RunnerStart
from fincart_devstack.localstack import Infra


async def drop_artifacts(url: str, prefix: str) -> None:
    """Remove a prefix's ledger stream and bundle bucket (tests share the broker)."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(artifacts.stream_name(prefix))
        with contextlib.suppress(nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError):
            await js.delete_object_store(artifacts.bucket_name(prefix))
    finally:
        await nc.close()


@pytest.fixture
async def prefix(infra: Infra, unique_name: str) -> AsyncIterator[str]:
    name = unique_name.replace("_", "-")[:30]
    yield name
    await drop_artifacts(infra.nats_url, name)


def entries(runner: int, n: int) -> list[LedgerEntry]:
    return [
        LedgerEntry(
            webhook_id=f"w-{runner}-{i}",
            order_id=f"o-{i % 7}",
            kind="valid",
            runner=runner,
            status=200,
            first_status=200,
            attempts=1,
            sent_at=float(i),
            done_at=i + 0.5,
            latency_ms=500.0,
        )
        for i in range(n)
    ]


async def test_ledgers_travel_whole_and_a_cut_one_is_noticed(
    infra: Infra, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts, "CHUNK_BYTES", 2_000)  # many chunks from a small ledger
    sent = entries(0, 300)
    published = await artifacts.publish_ledger(
        infra.nats_url, prefix, "run1", RunnerStart(runner=0, stream_seq=41), sent
    )
    assert published > 10
    # runner 1 dies after its start message and one chunk, and another run's ledger shares the stream
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    to = artifacts.subject(prefix, "run1", 1)
    await js.publish(
        to, RunnerStart(runner=1, stream_seq=40).model_dump_json().encode(), headers={artifacts.KIND: "start"}
    )
    await js.publish(to, entries(1, 1)[0].model_dump_json().encode(), headers={artifacts.KIND: "entries"})
    await js.publish(to, b'{"entries": 5}', headers={artifacts.KIND: "end"})  # 5 announced, 1 arrived
    await nc.close()
    await artifacts.publish_ledger(infra.nats_url, prefix, "run2", RunnerStart(runner=0), entries(0, 3))

    got, starts, missing = await artifacts.read_ledgers(infra.nats_url, prefix, "run1", runners=2, timeout=5)
    assert got == sent and missing == [1]
    assert sorted((s.runner, s.stream_seq) for s in starts) == [(0, 41), (1, 40)]
    other, _, missing = await artifacts.read_ledgers(infra.nats_url, prefix, "run2", runners=1, timeout=5)
    assert len(other) == 3 and missing == []


async def test_a_bundle_round_trips_through_the_object_store(infra: Infra, prefix: str) -> None:
    files = {"report.json": b'{"verdict": "Pass"}', "report.html": b"<html>" + b"x" * 300_000, "junit.xml": b"<x/>"}
    where = await artifacts.put_bundle(infra.nats_url, prefix, "run9", files)
    assert "fetch-bundle run9" in where and artifacts.bucket_name(prefix) in where
    assert await artifacts.fetch_bundle(infra.nats_url, prefix, "run9", list(files)) == files
