"""The ingest service as a real process against real NATS JetStream and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.partition import Topology
from fincart_core.signing import sign
from fincart_devstack.localstack import EmbeddedNats, EmbeddedRedis, ServiceProcess
from fincart_ingest import webhook_checks as checks

from tests.support.ingest_service import signed_headers, start_ingest


def order_body(order_id: str = "order-1", **fields: object) -> bytes:
    return json.dumps(
        {
            "id": order_id,
            "updated_at": "2026-01-01T10:00:00Z",
            "financial_status": "paid",
            "fulfillment_status": None,
            "total_price": "59.90",
            "shipping_lines": [{"price": "7.99", "title": "std"}],
            "note": "kept",
            **fields,
        }
    ).encode()


@pytest.fixture
def ingest(service_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceProcess]:
    service = start_ingest(service_env, tmp_path)
    yield service
    service.stop()


@pytest.fixture
async def client(ingest: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ingest.base_url, timeout=10) as http:
        yield http


async def stream_messages(nats_url: str, topology: Topology) -> list[nats.aio.msg.Msg]:
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        info = await js.stream_info(topology.orders_stream)
        return (
            [
                await js.get_msg(topology.orders_stream, seq)
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
            if info.state.messages
            else []
        )
    finally:
        await nc.close()


async def test_accepts_a_signed_webhook_onto_its_partition(client, infra, topology):
    body = order_body("order-42")
    answer = await client.post(
        "/webhooks/shopify",
        content=body,
        headers={
            **signed_headers(body, "wh-42"),
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )
    assert answer.status_code == 200
    assert answer.json() == {"status": "accepted", "webhookId": "wh-42"}
    [msg] = await stream_messages(infra.nats_url, topology)
    assert msg.subject == topology.webhook_subject_for("order-42")
    assert msg.headers["Nats-Msg-Id"] == "wh-42"
    # the trace the shop started continues in the message the processor will read
    assert msg.headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    message = WebhookMessage.model_validate_json(msg.data)
    assert message.webhook_id == "wh-42" and message.topic == "orders/updated"
    assert message.shop_domain == "shop.example" and message.order["note"] == "kept"


async def test_duplicate_delivery_is_answered_duplicate_and_stored_once(client, infra, topology):
    body = order_body()
    first = await client.post("/webhooks/shopify", content=body, headers=signed_headers(body, "wh-dup"))
    again = await client.post("/webhooks/shopify", content=body, headers=signed_headers(body, "wh-dup"))
    assert first.json()["status"] == "accepted"
    assert again.status_code == 200 and again.json() == {
        "status": "duplicate",
        "webhookId": "wh-dup",
        "message": "webhook already received",
    }
    assert len(await stream_messages(infra.nats_url, topology)) == 1
    metrics = (await client.get("/metrics")).text
    assert "fincart_ingest_dedupe_hits_total 1.0" in metrics
    assert 'fincart_ingest_requests_total{status="200"} 2.0' in metrics


@pytest.mark.parametrize(
    ("mutate", "status", "needle"),
    [
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-Shopify-Hmac-Sha256"}), 401, "missing"),
        (lambda b, h: (b, {**h, "X-Shopify-Hmac-Sha256": sign(b, "wrong")}), 401, "invalid"),
        (lambda b, h: (b, {**h, "X-Shopify-Hmac-Sha256": h["X-Shopify-Hmac-Sha256"][:-8]}), 401, "invalid"),
        (lambda b, h: (b, {**h, "X-Shopify-Hmac-Sha256": "%%%not-base64"}), 401, "invalid"),
        (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-Shopify-Webhook-Id"}), 400, "Webhook-Id"),
        (lambda b, h: (b, {**h, "X-Shopify-Topic": "products/update"}), 422, "X-Shopify-Topic"),
        (lambda b, h: (b"{not json", signed_headers(b"{not json")), 422, "JSON"),
        (lambda b, h: (b"[1]", signed_headers(b"[1]")), 422, "object"),
        (lambda b, h: ((x := b"[" * 100_000 + b"]" * 100_000), signed_headers(x)), 422, "nested deeper than 100"),
        # what the processor could never parse or convert: refused at the door (these were 500s or poison)
        (
            lambda b, h: ((x := order_body(deep=json.loads("[" * 300 + "]" * 300))), signed_headers(x)),
            422,
            "'deep.0.0.0",
        ),
        (lambda b, h: ((x := order_body().replace(b'"kept"', b"9" * 5000)), signed_headers(x)), 422, "4300 digits"),
        (lambda b, h: ((x := order_body(note="\ud800")), signed_headers(x)), 422, "'note': contains a lone"),
        (
            lambda b, h: ((x := order_body().replace(b'"kept"', b'"\xed\xa0\x80"')), signed_headers(x)),
            422,
            "'note': contains a lone",
        ),
        (lambda b, h: ((x := order_body(weight=float("nan"))), signed_headers(x)), 422, "NaN"),
        (lambda b, h: ((x := order_body().replace(b'"kept"', b"1e400")), signed_headers(x)), 422, "out of range"),
        (
            lambda b, h: ((x := order_body(updated_at="0001-01-01T00:00:00+01:00")), signed_headers(x)),
            422,
            "'updated_at': Value error, must be between",
        ),
        (
            lambda b, h: ((x := order_body(updated_at="9999-12-31T23:30:00-01:00")), signed_headers(x)),
            422,
            "'updated_at': Value error, must be between",
        ),
        (
            lambda b, h: (order_body(updated_at="soon"), signed_headers(order_body(updated_at="soon"))),
            422,
            "updated_at",
        ),
        (lambda b, h: (order_body(total_price="-5"), signed_headers(order_body(total_price="-5"))), 422, "total_price"),
        (
            lambda b, h: ((x := json.dumps({"updated_at": "2026-01-01T00:00:00Z"}).encode()), signed_headers(x)),
            422,
            "'id'",
        ),
        # PostgreSQL text and jsonb cannot hold NUL: refused at the door, naming the field
        (lambda b, h: ((x := order_body("order\x00nul")), signed_headers(x)), 422, "'id': contains a NUL"),
        (
            lambda b, h: ((x := order_body(financial_status="pa\x00id")), signed_headers(x)),
            422,
            "'financial_status': contains a NUL",
        ),
        (
            lambda b, h: ((x := order_body(fulfillment_status="\x00")), signed_headers(x)),
            422,
            "'fulfillment_status': contains a NUL",
        ),
        (
            lambda b, h: ((x := order_body(shipping_lines=[{"price": "1.00", "title": "a\x00"}])), signed_headers(x)),
            422,
            "'shipping_lines.0.title': contains a NUL",
        ),
        (lambda b, h: ((x := order_body(**{"k\x00": 1})), signed_headers(x)), 422, "contains a NUL"),
    ],
    ids=[
        "no-signature",
        "bad-signature",
        "short-signature",
        "garbage-signature",
        "no-webhook-id",
        "bad-topic",
        "bad-json",
        "not-an-object",
        "too-deep",
        "300-levels",
        "5000-digits",
        "lone-surrogate",
        "raw-surrogate",
        "nan",
        "inf",
        "updated-at-year-0-in-utc",
        "updated-at-year-10000-in-utc",
        "bad-updated-at",
        "negative-price",
        "missing-id",
        "nul-in-order-id",
        "nul-in-financial-status",
        "nul-in-fulfillment-status",
        "nul-nested",
        "nul-in-key",
    ],
)
async def test_bad_input_gets_a_clear_error_and_reaches_nothing(client, infra, topology, mutate, status, needle):
    body, headers = mutate(order_body(), signed_headers(order_body()))
    answer = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert needle in answer.json()["detail"]
    assert await stream_messages(infra.nats_url, topology) == []


async def test_nul_in_the_webhook_id_is_400_and_reaches_nothing(ingest, infra, topology):
    # httpx refuses to send NUL in a header, so the request goes out raw
    body = order_body()
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(body, "wh-\x00-nul").items())
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port)
    writer.write(
        f"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"400", status_line
    assert await stream_messages(infra.nats_url, topology) == []
    # uvicorn's HTTP parser answers that 400 itself; ingest's own check holds under any server
    with pytest.raises(checks.Rejection) as refused:
        checks.check_webhook_id("wh-\x00-nul")
    assert refused.value.status == 400 and "NUL" in refused.value.detail


async def test_body_over_the_limit_is_413(client, infra, topology):
    body = order_body(note="x" * (1024 * 1024))
    answer = await client.post("/webhooks/shopify", content=body, headers=signed_headers(body))
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b"x" * 65536

    streamed = await client.post("/webhooks/shopify", content=chunks(), headers=signed_headers(b""))
    assert streamed.status_code == 413
    assert await stream_messages(infra.nats_url, topology) == []


async def test_a_body_that_could_not_be_published_is_413_not_503(client, infra, topology):
    """Under FINCART_MAX_BODY_BYTES (1 MiB) but over the broker's max_payload (1 MiB) with the envelope: was a
    503 forever; and a body under the limit whose message grows past max_payload ("1e9" is 1000000000.0)."""
    nc = await nats.connect(infra.nats_url)
    max_payload = nc.max_payload
    await nc.close()
    near = order_body(note="")
    near = near.replace(b'"note": ""', b'"note": "' + b"x" * (max_payload - len(near) - 100) + b'"')
    answer = await client.post("/webhooks/shopify", content=near, headers=signed_headers(near, "wh-near"))
    assert answer.status_code == 413 and f"{max_payload - 4096} byte limit" in answer.json()["detail"]

    grows = order_body(note="").replace(b'""', b"[" + b",".join([b"1e9"] * (max_payload // 8)) + b"]")
    assert len(grows) < max_payload - 4096
    answer = await client.post("/webhooks/shopify", content=grows, headers=signed_headers(grows, "wh-grows"))
    assert answer.status_code == 413 and "max_payload" in answer.json()["detail"]
    assert await stream_messages(infra.nats_url, topology) == []
    ok = order_body("order-after")
    assert (await client.post("/webhooks/shopify", content=ok, headers=signed_headers(ok, "wh-ok"))).status_code == 200


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"nats": "ok", "redis": "ok"}


def test_refuses_to_start_without_a_secret(service_env, tmp_path):
    with pytest.raises(Exception, match="FINCART_WEBHOOK_SECRET"):
        start_ingest({**service_env, "FINCART_WEBHOOK_SECRET": ""}, tmp_path)


def test_refuses_an_orders_stream_shorter_than_the_dedupe_window(service_env, tmp_path):
    with pytest.raises(Exception, match=r"(?s)exited with 2.*FINCART_ORDERS_MAX_AGE_SECONDS must be at least"):
        start_ingest({**service_env, "FINCART_ORDERS_MAX_AGE_SECONDS": "86400"}, tmp_path)


async def test_publish_failure_is_503_without_a_mark_and_the_retry_is_accepted(
    service_env, tmp_path, redis_client, topology
):
    broker = EmbeddedNats(tmp_path / "own-nats")
    broker.start()
    service = start_ingest({**service_env, "FINCART_NATS_URL": broker.url, "FINCART_PUBLISH_TIMEOUT_S": "1"}, tmp_path)
    body = order_body("order-503")
    try:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
            broker.stop()
            down = await http.post("/webhooks/shopify", content=body, headers=signed_headers(body, "wh-503"))
            assert down.status_code == 503 and down.headers["retry-after"]
            assert not await redis_client.exists(f"{topology.prefix}:fincart:webhook:wh-503")
            assert (await http.get("/readyz")).status_code == 503
            broker.start()
            for _ in range(50):  # the client reconnects on its own; wait for it, bounded
                if (await http.get("/readyz")).status_code == 200:
                    break
                await __import__("asyncio").sleep(0.2)
            retry = await http.post("/webhooks/shopify", content=body, headers=signed_headers(body, "wh-503"))
            # stored exactly once: either this retry stored it, or the 503'd publish was flushed on reconnect
            assert retry.status_code == 200 and retry.json()["status"] in ("accepted", "duplicate")
            assert len(await stream_messages(broker.url, topology)) == 1
    finally:
        service.stop()
        broker.stop()


async def test_redis_down_still_accepts_and_jetstream_dedupes(service_env, tmp_path, infra, topology):
    cache = EmbeddedRedis(tmp_path)
    cache.start()
    service = start_ingest({**service_env, "FINCART_REDIS_URL": cache.url}, tmp_path)
    body = order_body("order-noredis")
    try:
        cache.stop()
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
            first = await http.post("/webhooks/shopify", content=body, headers=signed_headers(body, "wh-r"))
            again = await http.post("/webhooks/shopify", content=body, headers=signed_headers(body, "wh-r"))
            ready = await http.get("/readyz")
            metrics = (await http.get("/metrics")).text
        assert first.json()["status"] == "accepted" and again.json()["status"] == "duplicate"
        assert ready.status_code == 200 and ready.json()["checks"]["redis"].startswith("unreachable")
        assert "fincart_ingest_redis_errors_total" in metrics
        assert len(await stream_messages(infra.nats_url, topology)) == 1
    finally:
        service.stop()
