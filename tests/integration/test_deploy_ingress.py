"""Traffic through the Ingress on one machine: Debian's nginx (fincart_devstack.ingress_proxy) in front of real
ingest and sync processes, with the rules the chart gives ingress-nginx: body limit, WebSocket timeouts,
forwarded headers and only the public paths. ``fincart-chaos run --local --via-ingress`` on the examples."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from fincart_chaos.load import LoadStats, run_load
from fincart_chaos.observer import Observer
from fincart_chaos.sync_endpoint import SyncEndpoint
from fincart_chaos.workload import Request, make_webhook
from fincart_core.db.admin import drop_database
from fincart_devstack.devstack import DevStack, StackConfig
from fincart_devstack.ingress_proxy import IngressRules, NginxIngress
from fincart_devstack.localstack import Infra, find_binary, free_port

from tests.integration.test_chaos_cli import EXAMPLES, chaos, infra_env
from tests.support.webhooks import order_payload, signed_request

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="Debian's nginx is not installed"
)

SECRET = "ingress-secret"
MAX_BODY = 65_536  # ingest's FINCART_MAX_BODY_BYTES here; the proxy allows 1 MiB more
HEARTBEAT_S = 2.0  # sync's heartbeat here: the proxy's read/send timeouts are 6 s
WAIT_S = 30.0


@pytest.fixture(scope="module")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    run = uuid.uuid4().hex[:8]
    config = StackConfig(
        database=f"t_ingress_{run}",
        partitions=4,
        processors=1,
        nats_prefix=f"t-ingress-{run}",
        webhook_secret=SECRET,
        ingest_port=0,
        sync_port=0,
        ingress=True,
        extra_env={"FINCART_MAX_BODY_BYTES": str(MAX_BODY), "FINCART_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S)},
    )
    dev = DevStack(config, infra, tmp_path_factory.mktemp("ingress"))
    dev.start()
    yield dev
    dev.stop()
    asyncio.run(drop_database(dev.database_url))


@pytest.fixture
def proxy(stack: DevStack) -> NginxIngress:
    assert stack.ingress is not None
    return stack.ingress


def bearer(stack: DevStack) -> dict[str, str]:
    """sync's read token as the clients of the read API send it."""
    return {"Authorization": f"Bearer {stack.config.read_token}"}


def access_log(proxy: NginxIngress) -> list[dict]:
    return [json.loads(line) for line in proxy.access_log.read_text().splitlines() if line.strip()]


async def metric(service_url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        text = (await http.get(f"{service_url}/metrics")).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def post(
    http: httpx.AsyncClient,
    payload: dict,
    webhook_id: str,
    secret: str = SECRET,
    **extra: object,
) -> httpx.Response:
    body, headers = signed_request(payload, webhook_id, secret)
    return await http.post("/webhooks/shopify", content=body, headers=headers, **extra)  # type: ignore[arg-type]


def test_the_rules_are_the_services_values(stack: DevStack, proxy: NginxIngress) -> None:
    assert proxy.rules == IngressRules(max_body_bytes=MAX_BODY, heartbeat_interval_s=HEARTBEAT_S)
    assert stack.ingest and stack.ingest.env["FINCART_MAX_BODY_BYTES"] == str(MAX_BODY)
    assert stack.sync and stack.sync.env["FINCART_HEARTBEAT_INTERVAL_S"] == str(HEARTBEAT_S)
    config = proxy.config_path.read_text()
    assert f"client_max_body_size {MAX_BODY + 1_048_576};" in config and "proxy_read_timeout 6s;" in config


async def test_signed_webhooks_pass_the_hmac_check_through_the_proxy(stack: DevStack, proxy: NginxIngress) -> None:
    order = "order_ingress_hmac"
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=WAIT_S) as http:
        # a body larger than nginx's 8 KiB client_body_buffer_size goes through its temp file
        payload = {**order_payload(order, 1), "note": "n" * 30_000}
        accepted = await post(http, payload, "ingress-hmac-1")
        assert accepted.status_code == 200 and accepted.json()["status"] == "accepted", accepted.text
        # chunked (no Content-Length): nginx buffers it and sends ingest a Content-Length
        body, headers = signed_request(order_payload(order, 2), "ingress-hmac-2", SECRET)

        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(0, len(body), 50):
                yield body[i : i + 50]

        chunked = await http.post("/webhooks/shopify", content=chunks(), headers=headers)
        assert chunked.status_code == 200, chunked.text
        forged = await post(http, order_payload(order, 3), "ingress-hmac-3", secret="not-the-secret")
        assert forged.status_code == 401 and "signature" in forged.text.lower()
    lines = [e for e in access_log(proxy) if e["uri"] == "/webhooks/shopify"]
    assert {e["upstream_status"] for e in lines[-3:]} == {"200", "401"}  # the answers came from ingest
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=WAIT_S, headers=bearer(stack)) as http:
        for _ in range(int(WAIT_S / 0.2)):
            got = await http.get(f"/orders/{order}")
            if got.status_code == 200 and got.json()["version"] == 2:
                break
            await asyncio.sleep(0.2)
        assert got.status_code == 200 and got.json()["last_webhook_id"] == "ingress-hmac-2", got.text


async def test_bodies_over_the_limits_get_413_from_ingest_then_from_the_proxy(
    stack: DevStack, proxy: NginxIngress
) -> None:
    assert stack.ingest
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=WAIT_S) as http:
        before = await metric(stack.ingest_url, 'fincart_ingest_requests_total{status="413"}')
        over_ingest = await post(http, {**order_payload("order_ingress_413", 1), "note": "n" * MAX_BODY}, "big-1")
        assert over_ingest.status_code == 413 and "limit" in over_ingest.json()["detail"]  # ingest's own answer
        over_proxy = await post(http, {**order_payload("order_ingress_413", 2), "note": "n" * 2_000_000}, "big-2")
        assert over_proxy.status_code == 413 and "Request Entity Too Large" in over_proxy.text  # nginx's page
    after = await metric(stack.ingest_url, 'fincart_ingest_requests_total{status="413"}')
    assert after == before + 1  # the second one never reached ingest
    assert access_log(proxy)[-1]["upstream_status"] == ""  # answered by nginx, no upstream


async def test_the_load_runner_counts_the_proxys_413_as_rejected(stack: DevStack, proxy: NginxIngress) -> None:
    webhook = make_webhook("order_ingress_runner", 0, seed=7)
    huge = dataclasses.replace(webhook, payload={**webhook.payload, "note": "n" * 2_000_000})
    stats = LoadStats(total=2)
    entries = await run_load(
        [Request(huge, "valid"), Request(make_webhook("order_ingress_runner", 1, 7), "valid")],
        proxy.base_url,
        SECRET,
        concurrency=1,
        stats=stats,
    )
    assert [(e.status, e.attempts, e.acked) for e in entries] == [(413, 1, False), (200, 1, True)]
    assert (stats.rejected, stats.errors, stats.acked) == (1, 0, 1)  # rejected: not retried, not an error


async def test_only_the_public_paths_are_routed(stack: DevStack, proxy: NginxIngress) -> None:
    assert stack.sync_url
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=WAIT_S, headers=bearer(stack)) as http:
        for path in ("/metrics", "/docs", "/openapi.json", "/healthz", "/readyz", "/webhooksX", "/sync/x"):
            answer = await http.get(path)
            assert answer.status_code == 404, (path, answer.status_code)
        assert (await http.get("/")).headers["content-type"].startswith("text/html")  # the live page
        assert (await http.get("/orders", params={"limit": 1})).status_code == 200
        assert (await http.get("/orders/nope")).json()["detail"].startswith("order")  # sync's own 404
        assert (await http.get("/webhooks/shopify")).status_code == 405  # ingest's: only POST
    async with httpx.AsyncClient(timeout=WAIT_S) as http:  # the services do serve them, to the cluster inside
        for url in (f"{stack.sync_url}/metrics", f"{stack.sync_url}/docs", f"{stack.ingest_url}/metrics"):
            assert (await http.get(url)).status_code == 200, url


async def test_a_host_rule_routes_only_its_host(stack: DevStack, tmp_path: Path) -> None:
    assert stack.ingest and stack.sync
    hosted = NginxIngress(
        tmp_path,
        dataclasses.replace(stack.ingress_rules, host="fincart.local"),  # type: ignore[arg-type]
        {"ingest": stack.ingest.port, "sync": stack.sync.port},
    )
    hosted.start()
    try:
        async with httpx.AsyncClient(base_url=hosted.base_url, timeout=WAIT_S, headers=bearer(stack)) as http:
            assert (await http.get("/orders")).status_code == 404
            assert (await http.get("/orders", headers={"Host": "fincart.local"})).status_code == 200
        async with SyncEndpoint(hosted.base_url, stack.config.read_token, "fincart.local").websocket() as ws:
            assert json.loads(await ws.recv())["type"] == "snapshot"
    finally:
        hosted.stop()


async def idle_frames(ws: websockets.ClientConnection, seconds: float) -> list[str]:
    """Every frame type received while the client itself sends nothing for ``seconds``."""
    kinds = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), left))["type"])
        except TimeoutError:
            break
    return kinds


async def test_heartbeats_keep_a_websocket_open_past_the_proxys_idle_timeout(
    stack: DevStack, proxy: NginxIngress, tmp_path: Path
) -> None:
    assert stack.sync and stack.ingest
    timeout = proxy.rules.timeout_s
    # the client sends nothing (no pings): only sync's heartbeats cross the proxy
    async with websockets.connect(
        f"ws://127.0.0.1:{proxy.port}/sync", ping_interval=None, additional_headers=bearer(stack)
    ) as ws:
        kinds = await idle_frames(ws, 2.5 * timeout)
        assert kinds.count("heartbeat") >= 3, kinds
        async with httpx.AsyncClient(base_url=proxy.base_url, timeout=WAIT_S) as http:
            assert (await post(http, order_payload("order_ingress_idle", 1), "idle-1")).status_code == 200
        for _ in range(100):
            frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
            if frame["type"] == "event" and frame["order"]["shopify_order_id"] == "order_ingress_idle":
                break
        else:
            raise AssertionError("the event never came")
    # control: a proxy whose timeout is shorter than sync's heartbeat interval does cut the idle connection
    short = NginxIngress(
        tmp_path,
        IngressRules(heartbeat_interval_s=HEARTBEAT_S / 6),
        {"ingest": stack.ingest.port, "sync": stack.sync.port},
    )
    assert short.rules.timeout_s < HEARTBEAT_S
    short.start()
    try:
        async with websockets.connect(
            f"ws://127.0.0.1:{short.port}/sync", ping_interval=None, additional_headers=bearer(stack)
        ) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(idle_frames(ws, WAIT_S), WAIT_S + 5)
    finally:
        short.stop()
    assert [e["status"] for e in access_log(short)] == [101]  # closed by the proxy, after the upgrade


async def test_the_observer_resumes_with_since_after_nginx_restarts(stack: DevStack, proxy: NginxIngress) -> None:
    assert stack.sync_url
    order = "order_ingress_resume"
    observer = Observer(SyncEndpoint(proxy.base_url, stack.config.read_token), order=order)
    task = asyncio.create_task(observer.run())
    resumes_before = await metric(stack.sync_url, "fincart_sync_resumes_total")
    try:
        await asyncio.wait_for(observer.ready.wait(), WAIT_S)
        async with httpx.AsyncClient(base_url=proxy.base_url, timeout=WAIT_S) as http:
            for i in range(1, 4):
                assert (await post(http, order_payload(order, i), f"resume-{i}")).status_code == 200
        await until(lambda: max((s.version for s in observer.log), default=0) == 3)
        proxy.stop()  # connections cut; meanwhile webhooks go straight to ingest
        async with httpx.AsyncClient(base_url=stack.ingest_url, timeout=WAIT_S) as http:
            for i in range(4, 7):
                assert (await post(http, order_payload(order, i), f"resume-{i}")).status_code == 200
        proxy.start()
        await until(lambda: max((s.version for s in observer.log), default=0) == 6)
    finally:
        await observer.stop()
        await asyncio.wait_for(task, WAIT_S)
    assert observer.connections >= 2, observer.problems
    # the first connection's snapshot (of an order not yet there) is a lone reset; the second connection
    # resumed (no snapshot, so no second reset): the versions missed while nginx was down were replayed
    assert [s.kind for s in observer.log if s.kind != "event"] == ["reset"] and observer.log[0].kind == "reset"
    assert sorted({s.version for s in observer.log if s.kind == "event"}) == [1, 2, 3, 4, 5, 6]
    resumes_after = await metric(stack.sync_url, "fincart_sync_resumes_total")
    assert resumes_after >= resumes_before + 1
    assert any(e["uri"] == "/sync" and e["status"] == 101 for e in access_log(proxy))


async def until(check, timeout: float = WAIT_S) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("example", ["seed", "stress", "faults"])
def test_the_examples_pass_through_the_ingress(example: str, infra: Infra, tmp_path: Path) -> None:
    # faults restarts NATS and Redis: the run starts its own; the others share this session's
    kinds = ("postgres",) if example == "faults" else ("nats", "redis", "postgres")
    out = tmp_path / "report.json"
    done = chaos(
        "run",
        EXAMPLES / f"chaostest-{example}.yaml",
        "--local",
        "--via-ingress",
        "--report",
        out,
        "--logdir",
        tmp_path / "logs",
        env=infra_env(infra, *kinds),
    )
    assert out.exists(), done.stderr[-3000:]
    report = json.loads(out.read_text())["reports"][0]
    assert done.returncode == 0 and report["verdict"] == "Pass", (report.get("anomalies"), done.stderr[-3000:])
    assert report["counts"]["lost"] == 0
    log = [json.loads(line) for line in (tmp_path / "logs" / example / "nginx" / "access.log").read_text().splitlines()]
    webhooks = [e for e in log if e["uri"] == "/webhooks/shopify"]
    assert len(webhooks) >= report["counts"]["sent"] and {e["host"] for e in log} == {"fincart.local"}
    assert any(e["uri"] == "/sync" for e in log) and any(e["uri"].startswith("/orders/") for e in log)


def test_fincart_dev_up_with_the_ingress(tmp_path: Path) -> None:
    """``fincart-dev up --ingress`` on embedded NATS, Redis and PostgreSQL (no FINCART_*_URL: nothing shared)."""
    port = free_port()
    token = "fct_" + uuid.uuid4().hex  # `up` serves this read token instead of a new one
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINCART_")} | {
        "FINCART_WEBHOOK_SECRET": SECRET,
        "FINCART_SYNC_TOKEN": token,
    }
    dev = subprocess.Popen(
        [
            find_binary("fincart-dev"),
            "up",
            "--ingress",
            "--ingress-port",
            str(port),
            "--ingest-port",
            str(free_port()),
            "--sync-port",
            str(free_port()),
            "--logdir",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(dev.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 180  # embedded PostgreSQL's initdb included
        while not any(line.startswith("Logs") for line in lines) and dev.poll() is None:
            assert time.monotonic() < deadline, lines
            time.sleep(0.2)
        assert any(line.startswith(f"Ingress   http://127.0.0.1:{port}/") for line in lines), lines
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            body, headers = signed_request(order_payload("order_dev_up", 1), "dev-up-1", SECRET)
            assert http.post("/webhooks/shopify", content=body, headers=headers).status_code == 200
            for _ in range(int(WAIT_S / 0.2)):
                order = http.get("/orders/order_dev_up")
                if order.status_code == 200:
                    break
                time.sleep(0.2)
            assert order.json()["version"] == 1, order.text
            assert http.get("/metrics").status_code == 404
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        assert dev.wait(60) == 0, lines[-20:]
