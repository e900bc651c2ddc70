"""A resume replay ends at the stream position its resume frame announced, whatever the broker reports as
pending: nats-server 2.9 sometimes counted a delivery's ``num_pending`` as 0 with events still to come, and
sync ended the replay there while its cursor (and so its heartbeats) claimed the whole range. A chaos run
found it (a resuming observer ended without the last versions of some orders); here a proxy that reports
0 on every delivery (tests/support/pending_liar.py) makes it certain."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import nats
from fincart_core.partition import Topology
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from tests.integration.test_sync_service import (  # noqa: F401  (sync_env is a fixture)
    Events,
    connect,
    order_state,
    recv,
    start_sync,
    sync_env,
    ws_url,
)
from tests.support.pending_liar import PendingLiar


async def test_a_resume_replays_up_to_its_announced_seq_when_the_broker_says_nothing_is_pending(
    sync_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
    js: JetStreamContext,
    topology: Topology,
) -> None:
    events = Events(js, topology)
    seqs = [await events.publish(order_state(f"o{i % 5}", i // 5 + 1)) for i in range(30)]
    upstream = urlsplit(sync_env["FINCART_NATS_URL"])
    async with PendingLiar(upstream.hostname or "127.0.0.1", upstream.port or 4222) as url:
        # the fault is on: a delivery with 28 messages after it says 0 are pending
        nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1)
        try:
            sub = await nc.jetstream().subscribe(
                topology.events_wildcard,
                stream=topology.events_stream,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                config=ConsumerConfig(opt_start_seq=seqs[1]),
            )
            first = await sub.next_msg(timeout=10)
            assert (first.metadata.sequence.stream, first.metadata.num_pending) == (seqs[1], 0)
        finally:
            await nc.close()

        # started and stopped off the event loop, which runs the proxy meanwhile
        service = await asyncio.to_thread(start_sync, {**sync_env, "FINCART_NATS_URL": url}, tmp_path)
        try:
            async with connect(ws_url(service, since=seqs[0])) as ws:
                assert await recv(ws) == {"type": "resume", "since": seqs[0], "seq": seqs[-1]}
                frames = [await recv(ws)]
                # until the connection says it covered the last seq (a heartbeat, every 0.5 s here)
                while not (frames[-1]["type"] == "heartbeat" and frames[-1]["seq"] >= seqs[-1]):
                    frames.append(await recv(ws))
        finally:
            await asyncio.to_thread(service.stop)
    assert [f["seq"] for f in frames if f["type"] == "event"] == seqs[1:]
