"""The live page in a real browser: webhooks go through ingest and the processor, the row updates in place.

Debian chromium (``/usr/bin/chromium``, never a downloaded browser) driven by Playwright; the stack
(ingest, one processor, sync) runs as subprocesses through fincart_devstack.devstack.DevStack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
import pytest
from fincart_core.db.admin import drop_database
from fincart_core.partition import Topology
from fincart_core.signing import sign
from fincart_devstack.devstack import DevStack, StackConfig
from fincart_devstack.localstack import Infra

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECRET = "e2e-live-page-secret"
ORDER = "order_live_page_1"
WAIT_MS = 30_000
BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian chromium at /usr/bin/chromium (apt-get install -y chromium); CI installs it",
    ),
]


async def _delete_streams(nats_url: str, topology: Topology) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=3)
    js = nc.jetstream()
    for stream in (topology.orders_stream, topology.events_stream, topology.dlq_stream):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
    await nc.close()


@pytest.fixture
def stack(infra: Infra, unique_name: str, tmp_path: Path) -> Iterator[DevStack]:
    prefix = unique_name.replace("_", "-")[:30]
    config = StackConfig(
        database=unique_name,
        partitions=4,
        processors=1,
        nats_prefix=prefix,
        webhook_secret=SECRET,
        ingest_port=0,
        sync_port=0,
        extra_env={"FINCART_HEARTBEAT_INTERVAL_S": "1"},
    )
    dev = DevStack(config, infra, tmp_path)
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()
        asyncio.run(drop_database(dev.database_url))
        asyncio.run(_delete_streams(infra.nats_url, Topology(config.partitions, prefix)))


def send_webhook(stack: DevStack, i: int, financial: str, fulfillment: str | None) -> None:
    body = json.dumps(
        {
            "id": ORDER,
            "updated_at": (BASE + timedelta(minutes=i)).isoformat(),
            "financial_status": financial,
            "fulfillment_status": fulfillment,
            "total_price": "120.00",
            "shipping_lines": [],
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Webhook-Id": f"live-page-{ORDER}-{i}",
        "X-Shopify-Hmac-Sha256": sign(body, SECRET),
        "X-Shopify-Topic": "orders/updated",
        "X-Shopify-Shop-Domain": "e2e.myshopify.com",
        "X-Shopify-Triggered-At": BASE.isoformat(),
    }
    answer = httpx.post(f"{stack.ingest_url}/webhooks/shopify", content=body, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text


def test_live_page_shows_the_newest_version_without_reload(stack: DevStack, output_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    row = f"#order-{ORDER}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 420})
            page.goto(f"{stack.sync_url}/")
            page.fill("#token", "fct_wrong-token")  # a wrong token is refused and asked for again
            page.click("#sign-in")
            page.wait_for_selector("#why:has-text('invalid token')", timeout=WAIT_MS)
            page.fill("#token", stack.config.read_token)
            page.click("#sign-in")
            page.wait_for_selector("#conn[data-state=live]", timeout=WAIT_MS)
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads

            send_webhook(stack, 1, "pending", None)
            page.wait_for_selector(f"{row}[data-version='1'][data-status='PENDING']", timeout=WAIT_MS)
            send_webhook(stack, 2, "paid", None)
            send_webhook(stack, 3, "paid", "fulfilled")
            page.wait_for_selector(f"{row}[data-version='3'][data-status='SHIPPED']", timeout=WAIT_MS)
            assert page.evaluate("window.__sameDocument") is True
            assert page.inner_text(f"{row} .fee") == "5.99"  # total 120.00 -> fee 5.99

            # sync restarts while a change happens: the page reconnects with ?since= and catches up
            assert stack.sync is not None
            stack.sync.stop()
            page.wait_for_selector("#conn[data-state=offline]", timeout=WAIT_MS)
            send_webhook(stack, 4, "refunded", "restocked")
            stack.sync.start()
            page.wait_for_selector(f"{row}[data-version='4'][data-status='CANCELLED']", timeout=WAIT_MS)
            page.wait_for_selector("#conn[data-state=live]", timeout=WAIT_MS)  # the tab kept its token
            assert page.is_hidden("#login")
            assert page.evaluate("window.__sameDocument") is True
            assert page.inner_text("#count") == "1"
            page.screenshot(path=str(output_dir / "live_page.png"))
        finally:
            browser.close()
    auth = {"Authorization": f"Bearer {stack.config.read_token}"}
    order = httpx.get(f"{stack.sync_url}/orders/{ORDER}", headers=auth, timeout=10).json()
    assert order["version"] == 4 and order["status"] == "CANCELLED"
