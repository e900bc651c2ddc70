"""Sync rides out a NATS restart: the same WebSocket keeps receiving, with no gap in the stream seqs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import nats
from fincart_core.partition import Topology
from fincart_core.streams import ensure_streams
from fincart_devstack.localstack import EmbeddedNats
from test_sync_service import Events, connect, order_state, read_events_until, read_snapshot, start_sync, ws_url

WAIT_S = 30.0


async def publish_batch(url: str, topology: Topology, order: str, versions: range) -> list[int]:
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        await ensure_streams(js, topology)
        events = Events(js, topology)
        return [await events.publish(order_state(order, v)) for v in versions]
    finally:
        await nc.close()


async def wait_ready(base_url: str) -> None:
    deadline = time.monotonic() + WAIT_S
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"sync not ready again within {WAIT_S}s")


async def test_live_clients_survive_a_broker_restart(service_env, topology, tmp_path: Path):
    broker = EmbeddedNats(tmp_path)  # our own broker: restarting the shared one would hit other tests
    broker.start()
    sync = None
    try:
        await publish_batch(broker.url, topology, "r", range(1, 1))  # create the streams
        sync = start_sync({**service_env, "FINCART_NATS_URL": broker.url}, tmp_path)
        async with connect(ws_url(sync)) as ws:
            await read_snapshot(ws)
            before = await publish_batch(broker.url, topology, "r", range(1, 4))
            got = await read_events_until(ws, before[-1])
            broker.stop()
            broker.start()  # same port, same file store: the stream and its seqs survive
            after = await publish_batch(broker.url, topology, "r", range(4, 7))
            got += await asyncio.wait_for(read_events_until(ws, after[-1]), WAIT_S)
        assert [e["seq"] for e in got] == before + after
        assert [e["version"] for e in got] == [1, 2, 3, 4, 5, 6]
        await wait_ready(sync.base_url)
    finally:
        if sync is not None:
            sync.stop()
        broker.stop()
