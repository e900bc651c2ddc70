"""Read-side authentication of sync as a real process: every route without, with a bad and with a good
token; rotation (two hashes at once); the per-token connection cap; tokens never reach the log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fincart_core.auth import new_token, token_hash, ws_subprotocols
from test_sync_service import WAIT_S, read_snapshot, recv, start_sync, ws_url
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

OLD, NEW = new_token(), new_token()  # both allowed: a rotation in progress


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def sync(service_env, tmp_path: Path, js):  # type: ignore[no-untyped-def]
    hashes = f"{token_hash(OLD)},{token_hash(NEW)}"
    service = start_sync(
        {**service_env, "FINCART_READ_TOKEN_HASHES": hashes, "FINCART_WS_MAX_CONNECTIONS_PER_TOKEN": "1"},
        tmp_path,
        "sync-auth",
    )
    yield service
    service.stop()


async def closed_with(ws) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT_S)
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.parametrize("path", ["/orders", "/orders/some-order"])
async def test_read_api_needs_a_token(sync, path: str):
    async with httpx.AsyncClient(base_url=sync.base_url, timeout=WAIT_S) as http:
        missing = await http.get(path)
        assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        for header in (bearer("fct_not-a-token"), {"Authorization": f"Basic {OLD}"}):
            bad = await http.get(path, headers=header)
            assert bad.status_code == 401, header
        assert (await http.get(path, headers=bearer("x"))).json() == {"detail": "invalid token"}
        for token in (OLD, NEW):
            good = await http.get(path, headers=bearer(token))
            assert good.status_code == (200 if path == "/orders" else 404)


async def test_ops_routes_and_the_page_need_none(sync):
    async with httpx.AsyncClient(base_url=sync.base_url, timeout=WAIT_S) as http:
        for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/"):
            assert (await http.get(path)).status_code == 200, path
        spec = (await http.get("/openapi.json")).json()
        assert spec["paths"]["/orders"]["get"]["security"] == [{"HTTPBearer": []}]
        metrics = (await http.get("/metrics")).text
    assert "fincart_sync_auth_failures_total" in metrics


async def test_websocket_needs_a_token(sync):
    async with ws_connect(ws_url(sync)) as ws:
        code, reason = await closed_with(ws)
    assert code == 4401 and "Authorization: Bearer" in reason
    async with ws_connect(ws_url(sync), additional_headers=bearer("fct_wrong")) as ws:
        assert await closed_with(ws) == (4401, "invalid token")
    async with ws_connect(ws_url(sync), subprotocols=ws_subprotocols("fct_wrong")) as ws:  # type: ignore[arg-type]
        assert await closed_with(ws) == (4401, "invalid token")
    async with ws_connect(ws_url(sync), additional_headers=bearer(OLD)) as ws:
        await read_snapshot(ws)
    async with ws_connect(ws_url(sync), subprotocols=ws_subprotocols(NEW)) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "fincart.v1"  # the token is never echoed back
        await read_snapshot(ws)
    log = sync.log_path.read_text()
    assert OLD not in log and NEW not in log and "fct_wrong" not in log


async def test_connections_per_token(sync):
    async with ws_connect(ws_url(sync), additional_headers=bearer(OLD)) as first:
        await read_snapshot(first)
        async with ws_connect(ws_url(sync), additional_headers=bearer(OLD)) as second:
            error = await recv(second)
            assert error["code"] == 4429 and "per token" in error["message"]
        async with ws_connect(ws_url(sync), additional_headers=bearer(NEW)) as other:  # another token: its own cap
            await read_snapshot(other)
