"""The TCP fault proxy over real sockets: each mode, probability, direction and the HTTP control API; and its
benchmark still runs end to end (figures never asserted)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fincart_chaos.proxy import Route, serve
from fincart_devstack.localstack import Infra, free_port

BENCHMARK = Path(__file__).parents[2] / "benchmarks" / "proxy.py"
WAIT_S = 10.0  # generous: only ever reached when something is broken
SILENCE_S = 0.5  # how long "nothing arrives" is watched


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def proxied(seed: int = 1) -> AsyncIterator[tuple[int, httpx.AsyncClient]]:
    """An echo server behind the proxy: (the proxy's port, a client of its control API)."""
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    listen, control = free_port(), free_port()
    route = Route("svc-echo", "127.0.0.1", listen, "127.0.0.1", server.sockets[0].getsockname()[1])
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve([route], "127.0.0.1", control, seed=seed, ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), WAIT_S)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{control}", timeout=WAIT_S) as http:
            yield listen, http
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
        server.close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT_S)


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), WAIT_S)


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bool:
    writer.write(data)
    await writer.drain()
    try:
        await asyncio.wait_for(reader.read(1), SILENCE_S)
    except TimeoutError:
        return True
    return False


async def put(http: httpx.AsyncClient, name: str, **body: object) -> httpx.Response:
    return await http.put(f"/faults/{name}", json=body)


async def test_without_faults_bytes_pass_unchanged_and_the_api_lists_the_route():
    async with proxied() as (port, http):
        reader, writer = await connect(port)
        assert await roundtrip(reader, writer, b"x" * 200_000) == b"x" * 200_000
        listed = (await http.get("/faults")).json()
        assert listed["faults"] == {} and list(listed["routes"]) == ["svc-echo"]
        metrics = (await http.get("/metrics")).text
        assert 'fincart_proxy_connections_total{outcome="forwarded",route="svc-echo"} 1.0' in metrics


async def test_latency_delays_each_direction_and_is_cleared():
    async with proxied() as (port, http):
        reader, writer = await connect(port)
        answer = await put(http, "slow", mode="latency", latency="300ms", jitter="50ms", direction="upstream")
        assert answer.status_code == 200 and answer.json()["latency"] == "300ms"
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await roundtrip(reader, writer, b"ping") == b"ping"
        assert loop.time() - started >= 0.25  # at least latency - jitter, one way
        assert (await http.delete("/faults/slow")).status_code == 204
        assert (await http.get("/faults")).json()["faults"] == {}
        assert await roundtrip(reader, writer, b"pong") == b"pong"


async def test_blackhole_leaves_open_connections_dead_and_lets_new_ones_through_once_cleared():
    async with proxied() as (port, http):
        before = await connect(port)
        assert await roundtrip(*before, b"a") == b"a"
        assert (await put(http, "hole", mode="blackhole")).status_code == 200
        assert await silent(*before, b"b")
        during = await connect(port)  # accepted, but nothing comes back
        assert await silent(*during, b"c")
        await http.delete("/faults/hole")
        assert await silent(*before, b"d")  # half-open for good: only a liveness check would notice
        after = await connect(port)
        assert await roundtrip(*after, b"e") == b"e"


async def test_reset_cuts_open_connections_and_refuses_new_ones_while_set():
    async with proxied() as (port, http):
        reader, writer = await connect(port)
        assert await roundtrip(reader, writer, b"a") == b"a"
        await put(http, "cut", mode="reset")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await roundtrip(reader, writer, b"b")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await roundtrip(*await connect(port), b"c")
        await http.delete("/faults/cut")
        assert await roundtrip(*await connect(port), b"d") == b"d"


async def test_bandwidth_limits_the_rate():
    async with proxied() as (port, http):
        reader, writer = await connect(port)
        await put(http, "thin", mode="bandwidth", bytesPerSecond=100_000, direction="downstream")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await roundtrip(reader, writer, b"z" * 50_000) == b"z" * 50_000
        assert loop.time() - started >= 0.4  # 50 kB at 100 kB/s, one way


async def test_probability_is_drawn_per_connection():
    async with proxied(seed=3) as (port, http):
        await put(http, "some", mode="blackhole", probability=0.5)
        outcomes = [await silent(*await connect(port), b"x") for _ in range(12)]
        assert any(outcomes) and not all(outcomes)  # seed 3: a mix (fixed by the seed)
        await put(http, "none", mode="reset", probability=0.0)
        assert (await http.delete("/faults/some")).status_code == 204
        assert await roundtrip(*await connect(port), b"y") == b"y"


async def test_bad_requests_get_a_clear_4xx_and_delete_is_idempotent():
    async with proxied() as (_, http):
        bad = await put(http, "x", mode="latency")
        assert bad.status_code == 422 and "latency" in bad.json()["error"]
        bad = await put(http, "x", mode="bandwidth")
        assert bad.status_code == 422 and "bytesPerSecond" in bad.json()["error"]
        bad = await put(http, "x", mode="teleport")
        assert bad.status_code == 422 and "mode" in bad.json()["error"]
        unknown = await put(http, "x", mode="reset", route="nope")
        assert unknown.status_code == 404 and "svc-echo" in unknown.json()["error"]
        assert (await http.delete("/faults/never-set")).status_code == 204


def test_the_proxy_benchmark_reports_every_figure(infra: Infra):
    env = {**os.environ, "FINCART_NATS_URL": infra.nats_url, "FINCART_DATABASE_URL": infra.database_url}
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--iterations", "50", "--warmup", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for prefix in ("nats_pubAck_", "postgres_"):
        assert all(
            result[f"{prefix}{k}"] > 0 for k in ("direct_p50_ms", "direct_p99_ms", "proxied_p50_ms", "proxied_p99_ms")
        ), result
