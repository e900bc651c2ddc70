"""The sync service as a real process against real NATS JetStream and PostgreSQL.

Events are published straight onto ORDER_EVENTS (as the processor does after commit) and, where the
snapshot must agree, the matching rows are written into the test's database with plain SQL.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
from fincart_core.auth import new_token, token_hash
from fincart_core.contracts.events import OrderEvent, OrderState
from fincart_core.partition import Topology
from fincart_devstack.localstack import ServiceProcess, find_binary, free_port
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

WAIT_S = 15.0
READ_TOKEN = new_token()
AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}
BASE = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = ("PENDING", "CONFIRMED", "SHIPPED", "CANCELLED")


def order_state(order_id: str, version: int, uid: uuid.UUID | None = None) -> OrderState:
    stamp = BASE + timedelta(minutes=version)
    return OrderState(
        id=uid or uuid.uuid5(uuid.NAMESPACE_URL, order_id),
        shopify_order_id=order_id,
        status=STATUSES[version % 4],
        total_price=Decimal("42.00") + version,
        shipping_fee=Decimal("9.99"),
        version=version,
        last_external_updated_at=stamp,
        last_webhook_id=f"wh-{order_id}-{version}",
        created_at=BASE,
        updated_at=stamp,
    )


class Events:
    """Publishes OrderEvents like the processor (subject by partition, Nats-Msg-Id order:version)."""

    def __init__(self, js, topology: Topology, db: asyncpg.Connection | None = None) -> None:  # type: ignore[no-untyped-def]
        self.js, self.topology, self.db = js, topology, db

    async def publish(self, state: OrderState, write_row: bool = False) -> int:
        if write_row:
            await self.publish_row(state)
        event = OrderEvent(order=state)
        ack = await self.js.publish(
            self.topology.event_subject_for(state.shopify_order_id),
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": event.msg_id},
        )
        return ack.seq

    async def publish_row(self, state: OrderState) -> None:
        """Write the order's row as the processor would (insert or update)."""
        assert self.db is not None
        await self.db.execute(
            """INSERT INTO orders (id, shopify_order_id, status, total_price, shipping_fee, version,
                   last_external_updated_at, last_webhook_id, created_at, updated_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
               ON CONFLICT (shopify_order_id) DO UPDATE SET status=$3, total_price=$4, shipping_fee=$5,
                   version=$6, last_external_updated_at=$7, last_webhook_id=$8, updated_at=$10""",
            state.id,
            state.shopify_order_id,
            state.status,
            state.total_price,
            state.shipping_fee,
            state.version,
            state.last_external_updated_at,
            state.last_webhook_id,
            state.created_at,
            state.updated_at,
        )


@pytest.fixture
def sync_env(service_env: dict[str, str]) -> dict[str, str]:
    return {**service_env, "FINCART_HEARTBEAT_INTERVAL_S": "0.5", "FINCART_SNAPSHOT_PAGE_SIZE": "3"}


def start_sync(env: dict[str, str], tmp_path: Path, name: str = "sync") -> ServiceProcess:
    """Sync as a subprocess; READ_TOKEN is allowed unless ``env`` sets the hashes itself."""
    port = free_port()
    env = {"FINCART_READ_TOKEN_HASHES": token_hash(READ_TOKEN), **env, "FINCART_HTTP_PORT": str(port)}
    service = ServiceProcess(
        name=name,
        argv=[find_binary("fincart-sync")],
        env=env,
        log_path=tmp_path / f"{name}.log",
        port=port,
    )
    service.start()
    return service


@pytest.fixture
def sync(sync_env: dict[str, str], tmp_path: Path, js) -> Iterator[ServiceProcess]:  # type: ignore[no-untyped-def]
    service = start_sync(sync_env, tmp_path)
    yield service
    service.stop()


def ws_url(service: ServiceProcess, **query: object) -> str:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return f"ws://127.0.0.1:{service.port}/sync" + (f"?{qs}" if qs else "")


def connect(url: str, **options: object):  # type: ignore[no-untyped-def]
    """A WebSocket client that sends READ_TOKEN."""
    return ws_connect(url, additional_headers=AUTH, **options)  # type: ignore[arg-type]


async def recv(ws) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))


async def read_snapshot(ws) -> tuple[int, dict[str, dict]]:  # type: ignore[no-untyped-def]
    """All snapshot pages: (seq, orders by id)."""
    orders: dict[str, dict] = {}
    while True:
        msg = await recv(ws)
        assert msg["type"] == "snapshot", msg
        orders.update({o["shopify_order_id"]: o for o in msg["orders"]})
        if msg["last"]:
            return msg["seq"], orders


async def read_events_until(ws, last_seq: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """Event frames until the one with ``last_seq`` (heartbeats skipped)."""
    events: list[dict] = []
    while not events or events[-1]["seq"] < last_seq:
        msg = await recv(ws)
        if msg["type"] == "event":
            events.append(msg)
    return events


def trail(events: list[dict]) -> list[tuple[int, str, int]]:
    return [(e["seq"], e["order"]["shopify_order_id"], e["version"]) for e in events]


async def test_events_reach_two_clients_in_order_and_resume_fills_the_gap(sync, js, topology):
    events = Events(js, topology)
    ids = [f"order-{i}" for i in range(3)]
    async with connect(ws_url(sync)) as steady, connect(ws_url(sync)) as flaky:
        assert (await read_snapshot(steady))[1] == {}
        await read_snapshot(flaky)
        sent = [(oid, v) for v in (1, 2) for oid in ids]
        seqs = [await events.publish(order_state(oid, v)) for oid, v in sent]
        first_half = await read_events_until(flaky, seqs[-1])
    # flaky is gone; more events happen while it is away
    async with connect(ws_url(sync)) as steady2:
        await read_snapshot(steady2)
        later = [(oid, v) for v in (3, 4, 5) for oid in ids]
        sent += [*later, (ids[0], 6)]
        seqs += [await events.publish(order_state(oid, v)) for oid, v in later]
        resume_from = first_half[-1]["seq"]
        async with connect(ws_url(sync, since=resume_from)) as resumed:
            hello = await recv(resumed)
            assert hello == {"type": "resume", "since": resume_from, "seq": hello["seq"]}
            assert hello["seq"] >= resume_from
            seqs.append(await events.publish(order_state(ids[0], 6)))  # live after the replay
            second_half = await read_events_until(resumed, seqs[-1])
        await read_events_until(steady2, seqs[-1])

    async with connect(ws_url(sync, since=0)) as full_replay:
        assert (await recv(full_replay))["type"] == "resume"
        replayed = await read_events_until(full_replay, seqs[-1])

    expected = [(seq, oid, v) for seq, (oid, v) in zip(seqs, sent, strict=True)]
    assert trail(first_half + second_half) == expected  # nothing missing, nothing twice, in stream order
    assert trail(replayed) == expected
    async with httpx.AsyncClient(base_url=sync.base_url, timeout=WAIT_S, headers=AUTH) as http:
        metrics = (await http.get("/metrics")).text
    assert "fincart_sync_resumes_total 2.0" in metrics
    assert "fincart_sync_send_lag_seconds_count" in metrics


async def test_steady_client_sees_every_event_in_order(sync, js, topology):
    events = Events(js, topology)
    async with connect(ws_url(sync)) as a, connect(ws_url(sync)) as b:
        await read_snapshot(a)
        await read_snapshot(b)
        seqs = [await events.publish(order_state(f"o{i % 4}", i // 4 + 1)) for i in range(40)]
        got_a, got_b = await asyncio.gather(read_events_until(a, seqs[-1]), read_events_until(b, seqs[-1]))
    assert [e["seq"] for e in got_a] == seqs
    assert trail(got_a) == trail(got_b)
    for oid in {e["order"]["shopify_order_id"] for e in got_a}:
        versions = [e["version"] for e in got_a if e["order"]["shopify_order_id"] == oid]
        assert versions == list(range(1, len(versions) + 1))


async def test_snapshot_plus_events_equal_the_table(sync, js, topology, db):
    events = Events(js, topology, db)
    ids = [f"snap-{i}" for i in range(7)]  # more than one snapshot page (page size 3)
    for oid in ids:
        for v in (1, 2):
            await events.publish(order_state(oid, v), write_row=True)
    async with connect(ws_url(sync)) as ws:
        seq, held = await read_snapshot(ws)
        assert set(held) == set(ids) and all(o["version"] == 2 for o in held.values())
        last = 0
        for oid in ids[:4]:
            for v in (3, 4):
                last = await events.publish(order_state(oid, v), write_row=True)
        for e in await read_events_until(ws, last):
            assert e["seq"] > seq
            o = e["order"]
            if o["version"] > held[o["shopify_order_id"]]["version"]:
                held[o["shopify_order_id"]] = o
    rows = await db.fetch("SELECT * FROM orders")
    table = {r["shopify_order_id"]: json.loads(OrderState.model_validate(dict(r)).model_dump_json()) for r in rows}
    assert held == table


async def test_order_filter_snapshot_and_heartbeat_cursor(sync, js, topology, db):
    events = Events(js, topology, db)
    await events.publish(order_state("mine", 1), write_row=True)
    await events.publish(order_state("other", 1), write_row=True)
    async with connect(ws_url(sync, order="mine")) as ws:
        _, held = await read_snapshot(ws)
        assert list(held) == ["mine"]
        await events.publish(order_state("other", 2))
        last = await events.publish(order_state("mine", 2))
        got = await read_events_until(ws, last)
        assert trail(got) == [(last, "mine", 2)]
        other = await events.publish(order_state("other", 3))
        for _ in range(20):  # heartbeats every 0.5 s carry the covered position past the filtered event
            msg = await recv(ws)
            assert msg["type"] == "heartbeat"
            if msg["seq"] >= other:
                break
        assert msg["seq"] == other


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("since=abc", "since"),
        ("since=-1", "since"),
        ("order=" + "x" * 300, "order"),
    ],
)
async def test_bad_query_closes_with_4400_and_a_reason(sync, query, needle):
    async with connect(f"ws://127.0.0.1:{sync.port}/sync?{query}") as ws:
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == 4400 and needle in error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), WAIT_S)
    assert closed.value.rcvd.code == 4400 and needle in closed.value.rcvd.reason
    async with httpx.AsyncClient(base_url=sync.base_url, timeout=WAIT_S, headers=AUTH) as http:
        assert (await http.get("/healthz")).status_code == 200  # and the service is still fine


async def test_ping_pong_and_unknown_messages(sync):
    async with connect(ws_url(sync)) as ws:
        await read_snapshot(ws)
        await ws.send('{"type": "ping"}')
        assert (await recv(ws))["type"] == "pong"
        await ws.send("not json")
        error = await recv(ws)
        while error["type"] == "heartbeat":
            error = await recv(ws)
        assert error["type"] == "error" and "ping" in error["message"]


async def test_resume_falls_back_to_a_snapshot_when_since_is_ahead(sync, js, topology, db):
    events = Events(js, topology, db)
    seq = await events.publish(order_state("a", 1), write_row=True)
    async with connect(ws_url(sync, since=seq + 1000)) as ws:
        msg = await recv(ws)
    assert msg["type"] == "snapshot" and msg["reason"] == "since_ahead_of_stream"
    assert [o["shopify_order_id"] for o in msg["orders"]] == ["a"]


async def test_slow_client_is_closed_with_4008_and_can_resume(sync_env, tmp_path, js, topology):
    service = start_sync({**sync_env, "FINCART_CLIENT_QUEUE_SIZE": "4"}, tmp_path, "sync-slow")
    try:
        events = Events(js, topology)
        big = "x" * 2000  # bigger frames fill the socket buffers sooner
        async with connect(ws_url(service), max_queue=1) as ws:
            await read_snapshot(ws)
            # a client that stops reading: the kernel buffers fill, then its 4-event queue overflows
            acks = []
            for i in range(4000):
                state = order_state(f"slow-{i % 50}", i // 50 + 1).model_copy(update={"last_webhook_id": big})
                acks.append(
                    events.js.publish(
                        events.topology.event_subject_for(state.shopify_order_id),
                        OrderEvent(order=state).model_dump_json().encode(),
                    )
                )
                if len(acks) >= 200:
                    await asyncio.gather(*acks)
                    acks.clear()
            await asyncio.gather(*acks)
            code = reason = None
            async with asyncio.timeout(WAIT_S * 2):
                try:
                    while True:
                        await ws.recv()
                except ConnectionClosed as closed:
                    code, reason = closed.rcvd.code, closed.rcvd.reason
        assert code == 4008 and "since=" in reason
        since = int(reason.rsplit("since=", 1)[1])
        # while sync still fans the burst out, a resume's 4-event buffer can overflow before it starts: it is
        # closed with the same since, and the client resumes again (as a real one would)
        for _attempt in range(20):
            async with connect(ws_url(service, since=since)) as again:
                hello = await recv(again)
                if hello["type"] == "error":
                    assert hello["code"] == 4008 and f"since={since}" in hello["message"], hello
                    continue
                assert hello["type"] == "resume", hello
                nxt = await recv(again)
                assert nxt["type"] == "event" and nxt["seq"] == since + 1
                break
        else:
            raise AssertionError("no resume within 20 attempts")
        async with httpx.AsyncClient(base_url=service.base_url, timeout=WAIT_S, headers=AUTH) as http:
            metrics = (await http.get("/metrics")).text
        assert "fincart_sync_slow_client_disconnects_total" in metrics
    finally:
        service.stop()


async def test_read_api(sync, js, topology, db):
    events = Events(js, topology, db)
    for i in range(5):  # later i: created later
        state = order_state(f"api-{i}", i + 1).model_copy(update={"created_at": BASE + timedelta(seconds=i)})
        await events.publish(state, write_row=True)
    async with httpx.AsyncClient(base_url=sync.base_url, timeout=WAIT_S, headers=AUTH) as http:
        first = (await http.get("/orders", params={"limit": 2})).json()
        assert [o["shopify_order_id"] for o in first["items"]] == ["api-4", "api-3"]
        rest = (await http.get("/orders", params={"limit": 10, "cursor": first["next_cursor"]})).json()
        assert [o["shopify_order_id"] for o in rest["items"]] == ["api-2", "api-1", "api-0"]
        assert rest["next_cursor"] is None
        shipped = (await http.get("/orders", params={"status": "SHIPPED"})).json()["items"]
        assert [o["shopify_order_id"] for o in shipped] == ["api-1"]  # version 2 -> STATUSES[2]
        one = await http.get("/orders/api-3")
        assert one.status_code == 200 and OrderState.model_validate(one.json()).version == 4
        missing = await http.get("/orders/nope")
        assert missing.status_code == 404 and missing.json() == {"detail": "order 'nope' not found"}
        assert (await http.get("/orders", params={"cursor": "garbage!"})).status_code == 400
        bad_status = await http.get("/orders", params={"status": "LOST"})
        assert bad_status.status_code == 422 and "status" in bad_status.text
        assert (await http.get("/orders", params={"limit": 0})).status_code == 422
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"nats": "ok", "postgres": "ok"}
        page = await http.get("/")
        assert page.status_code == 200 and "/sync" in page.text
        spec = (await http.get("/openapi.json")).json()
        assert "OrderState" in spec["components"]["schemas"]


async def test_paging_while_orders_change_skips_and_repeats_nothing(sync, js, topology, db):
    """Every order is updated (updated_at moves to now) between two page reads: pages keep their place."""
    ids = [f"page-{i:02d}" for i in range(23)]
    events = Events(js, topology, db)
    for i, oid in enumerate(ids):  # pairs share created_at: the id breaks the tie
        created = BASE + timedelta(seconds=i // 2)
        await events.publish_row(order_state(oid, 1).model_copy(update={"created_at": created}))
    seen: list[str] = []
    cursor = None
    async with httpx.AsyncClient(base_url=sync.base_url, timeout=WAIT_S, headers=AUTH) as http:
        for round_no in range(2, 50):
            params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/orders", params=params)).json()
            seen += [o["shopify_order_id"] for o in page["items"]]
            # touch every order, those already read and those still to come, in reverse creation order
            await db.execute(
                "UPDATE orders SET version = $1::int, updated_at = now() + $1::int * interval '1 second'", round_no
            )
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert len(seen) == len(set(seen)) == len(ids)
    rows = await db.fetch("SELECT shopify_order_id FROM orders ORDER BY created_at DESC, id DESC")
    assert seen == [r["shopify_order_id"] for r in rows]
