"""Sync's limits against abusive or broken clients, as a real process on real PostgreSQL and NATS:
never-reading sockets, a busy database, connection caps, foreign origins, oversized frames."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from test_sync_service import (
    AUTH,
    WAIT_S,
    Events,
    connect,
    order_state,
    read_snapshot,
    recv,
    start_sync,
    ws_url,
)
from websockets.exceptions import ConnectionClosed

POOL = 2


async def fill_orders(db, count: int, pad: int) -> None:  # type: ignore[no-untyped-def]
    """``count`` orders whose rows serialise to roughly ``pad`` bytes each (a snapshot of count*pad)."""
    await db.execute(
        """INSERT INTO orders (id, shopify_order_id, status, total_price, shipping_fee, version,
               last_external_updated_at, last_webhook_id)
           SELECT gen_random_uuid(), 'bulk-' || lpad(i::text, 6, '0'), 'PENDING', 10, 9.99, 1, now(),
                  repeat('w', $2)
           FROM generate_series(1, $1) AS i""",
        count,
        pad,
    )


async def never_reading_socket(port: int) -> asyncio.StreamWriter:
    """A WebSocket handshake, then nothing is ever read: the kernel buffers fill and sends block."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /sync HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Authorization: {AUTH['Authorization']}\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    status = await asyncio.wait_for(reader.readline(), WAIT_S)
    assert b" 101 " in status, status
    return writer


async def metric(http: httpx.AsyncClient, name: str) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def until(check, what: str, timeout: float = WAIT_S * 4) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.2)


@pytest.fixture
def limited_env(service_env: dict[str, str]) -> dict[str, str]:
    return {
        **service_env,
        "FINCART_DB_POOL_SIZE": str(POOL),
        "FINCART_SNAPSHOT_PAGE_SIZE": "50",
        "FINCART_DB_ACQUIRE_TIMEOUT_S": "1",
        "FINCART_DB_QUERY_TIMEOUT_S": "2",
    }


async def test_never_reading_sockets_hold_no_database_connection(limited_env, tmp_path: Path, js, db):
    """The reproduced attack: pool-size sockets that never read stalled /orders and /readyz."""
    await fill_orders(db, 3000, 3000)  # ~9 MB of snapshot: far more than the socket buffers take
    service = start_sync({**limited_env, "FINCART_WS_SEND_TIMEOUT_S": "3"}, tmp_path, "sync-idle")
    writers = []
    try:
        writers = [await never_reading_socket(service.port) for _ in range(POOL * 2)]
        async with httpx.AsyncClient(base_url=service.base_url, timeout=WAIT_S, headers=AUTH) as http:
            for _ in range(3):
                assert (await http.get("/orders", params={"limit": 5})).status_code == 200
                assert (await http.get("/readyz")).status_code == 200
                in_transaction = await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%'"
                )
                assert in_transaction == 0
                await asyncio.sleep(0.5)

            async def all_closed_as_slow() -> bool:
                return await metric(http, "fincart_sync_slow_client_disconnects_total") >= len(writers)

            async def none_left() -> bool:
                return await metric(http, "fincart_sync_clients") == 0

            await until(all_closed_as_slow, "the stuck sockets closed as slow (send deadline)")
            await until(none_left, "the stuck sockets' sessions ended")
    finally:
        for writer in writers:
            writer.close()
        service.stop()


async def test_busy_database_answers_503_not_a_hang(limited_env, tmp_path: Path, js, db):
    service = start_sync(limited_env, tmp_path, "sync-busy")
    try:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=WAIT_S, headers=AUTH) as http:
            assert (await http.get("/orders")).status_code == 200
            async with db.transaction():
                await db.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                # more requests than pool connections: some wait on the pool, the rest on the lock
                answers = await asyncio.gather(*(http.get("/orders") for _ in range(POOL + 2)))
                assert {a.status_code for a in answers} == {503}
                assert all("retry" in a.json()["detail"] for a in answers)
                assert answers[0].headers["retry-after"] == "1"
            assert (await http.get("/orders")).status_code == 200  # and recovers by itself
            assert (await http.get("/readyz")).status_code == 200
    finally:
        service.stop()


async def test_connection_cap(service_env, tmp_path: Path, js):
    service = start_sync({**service_env, "FINCART_WS_MAX_CONNECTIONS": "2"}, tmp_path, "sync-cap")
    try:
        async with connect(ws_url(service)) as a, connect(ws_url(service)) as b:
            await read_snapshot(a)
            await read_snapshot(b)
            async with connect(ws_url(service)) as third:
                error = await recv(third)
                assert error["code"] == 1013 and "limit of 2" in error["message"]
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(third.recv(), WAIT_S)
            assert closed.value.rcvd.code == 1013
        # slots are given back once the server has seen the closes (bounded wait: a 1013 means not yet)
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            async with connect(ws_url(service)) as again:
                first = await recv(again)
                if first["type"] == "snapshot" or asyncio.get_running_loop().time() > deadline:
                    assert first["type"] == "snapshot", first
                    break
            await asyncio.sleep(0.2)
    finally:
        service.stop()


async def test_origin_allow_list(service_env, tmp_path: Path, js):
    allowed = "https://shop.example"
    origins = f"https://other.example,{allowed}"  # comma separated
    service = start_sync({**service_env, "FINCART_WS_ALLOWED_ORIGINS": origins}, tmp_path, "sync-o")
    try:
        for origin in (None, f"http://127.0.0.1:{service.port}", allowed):  # none, same origin, listed
            async with connect(ws_url(service), origin=origin) as ws:
                await read_snapshot(ws)
        async with connect(ws_url(service), origin="https://evil.example") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT_S)
        assert closed.value.rcvd.code == 4403 and "origin" in closed.value.rcvd.reason
    finally:
        service.stop()


async def test_frames_over_the_limit_close_the_connection(service_env, tmp_path: Path, js):
    service = start_sync({**service_env, "FINCART_WS_MAX_MESSAGE_BYTES": "1024"}, tmp_path, "sync-frame")
    try:
        async with connect(ws_url(service)) as ws:
            await read_snapshot(ws)
            await ws.send('{"type": "ping"}')  # small frames are fine
            while (await recv(ws))["type"] != "pong":
                pass
            await ws.send(json.dumps({"type": "ping", "pad": "x" * 4096}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT_S)
        assert closed.value.rcvd.code == 1009  # message too big
    finally:
        service.stop()


async def test_resume_longer_than_the_bound_gets_a_snapshot(service_env, tmp_path: Path, js, topology, db):
    service = start_sync({**service_env, "FINCART_REPLAY_MAX_EVENTS": "3"}, tmp_path, "sync-bound")
    try:
        events = Events(js, topology, db)
        seqs = [await events.publish(order_state("b", v), write_row=True) for v in range(1, 6)]
        async with connect(ws_url(service, since=seqs[1])) as ws:  # 3 events behind: replayed
            assert (await recv(ws))["type"] == "resume"
        async with connect(ws_url(service, since=seqs[0])) as ws:  # 4 behind: over the bound
            msg = await recv(ws)
        assert msg["type"] == "snapshot" and msg["reason"] == "since_too_far_back"
        assert [(o["shopify_order_id"], o["version"]) for o in msg["orders"]] == [("b", 5)]
    finally:
        service.stop()
