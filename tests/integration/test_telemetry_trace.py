"""One webhook's trace, end to end: ingest, processor and sync as real processes exporting their spans to one
JSON-lines file (FINCART_OTEL_EXPORTER=file). The ingest span is the root; the processor's batch span links it
(a batch applies many webhooks, each in its own trace), and the processor's span that publishes the change
event is its child; the sync span that builds the WebSocket frame is that one's child, carried there by the
event's traceparent. All carry the webhook's and the order's ids."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fincart_core.db.admin import drop_database
from fincart_devstack.devstack import DevStack, StackConfig
from fincart_devstack.localstack import Infra
from websockets.asyncio.client import connect as ws_connect

from tests.support.webhooks import order_payload, signed_request

SECRET = "trace-secret"
WAIT_S = 60.0  # spans leave a BatchSpanProcessor every 5 s; a loaded machine needs more


@pytest.fixture
def traced_stack(infra: Infra, unique_name: str, tmp_path: Path) -> Iterator[tuple[DevStack, Path]]:
    spans = tmp_path / "spans.jsonl"
    config = StackConfig(
        database=unique_name,
        partitions=4,
        processors=1,
        nats_prefix=unique_name[:20],
        webhook_secret=SECRET,
        ingest_port=0,
        sync_port=0,
        log_level="INFO",
        extra_env={"FINCART_OTEL_EXPORTER": "file", "FINCART_OTEL_FILE": str(spans)},
    )
    stack = DevStack(config, infra, tmp_path)
    stack.start()
    try:
        yield stack, spans
    finally:
        stack.stop()
        asyncio.run(drop_database(stack.database_url))


def read_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for_trace(path: Path, webhook_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All spans of the webhook's trace and the batch spans that link it, once the processor's and sync's are in."""
    deadline = time.monotonic() + WAIT_S
    while True:
        spans = read_spans(path)
        roots = [
            s
            for s in spans
            if s["attributes"].get("fincart.webhook_id") == webhook_id and s["name"] == "ingest webhook"
        ]
        if roots:
            trace_id = roots[0]["context"]["trace_id"]
            in_trace = [s for s in spans if s["context"]["trace_id"] == trace_id]
            batches = [
                s
                for s in spans
                if s["name"] == "apply batch" and any(link["context"]["trace_id"] == trace_id for link in s["links"])
            ]
            if batches and {"publish event", "sync.fanout"} <= {s["name"] for s in in_trace}:
                return in_trace, batches
        if time.monotonic() > deadline:
            names = sorted({s["name"] for s in spans})
            raise AssertionError(f"no complete trace of {webhook_id} after {WAIT_S:.0f}s; span names seen: {names}")
        await asyncio.sleep(0.5)


async def test_one_webhook_is_traced_from_ingest_through_the_processor_to_the_websocket_frame(traced_stack):  # type: ignore[no-untyped-def]
    stack, spans_file = traced_stack
    order_id = f"trace-order-{uuid.uuid4().hex[:8]}"
    webhook_id = f"trace-webhook-{uuid.uuid4().hex[:8]}"
    assert stack.sync_url
    async with ws_connect(
        f"{stack.sync_url.replace('http', 'ws', 1)}/sync?order={order_id}",
        additional_headers={"Authorization": f"Bearer {stack.config.read_token}"},
    ) as ws:
        body, headers = signed_request(order_payload(order_id, 1), webhook_id, SECRET)
        async with httpx.AsyncClient(base_url=stack.ingest_url, timeout=WAIT_S) as http:
            answer = await http.post("/webhooks/shopify", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + WAIT_S
        while True:  # the frame reaches the client: sync's span is the one that built it
            frame = json.loads(await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.1)))
            if frame["type"] == "event" and frame["order"]["last_webhook_id"] == webhook_id:
                break

    in_trace, batches = await wait_for_trace(spans_file, webhook_id)
    names = [s["name"] for s in in_trace]
    assert set(names) == {"ingest webhook", "publish event", "sync.fanout"}, names
    (ingest,) = (s for s in in_trace if s["name"] == "ingest webhook")
    # a redelivery (loaded machine) may publish the event again: follow the frame's span back up
    fanout = next(s for s in in_trace if s["name"] == "sync.fanout")
    publish = next(s for s in in_trace if s["context"]["span_id"] == fanout["parent_id"])
    assert ingest["parent_id"] is None and ingest["kind"] == "SpanKind.SERVER"
    assert ingest["resource"]["attributes"]["service.name"] == "ingest"
    assert ingest["attributes"]["fincart.order_id"] == order_id

    # the processor publishes the order's change event in a child of the ingest span, linked to the batch span
    # that applied it, which links the webhook's span (a batch applies many webhooks, each in its own trace)
    assert publish["parent_id"] == ingest["context"]["span_id"] and publish["kind"] == "SpanKind.PRODUCER"
    assert publish["resource"]["attributes"]["service.name"] == "processor-0"
    (link,) = publish["links"]
    (batch,) = (b for b in batches if b["context"]["span_id"] == link["context"]["span_id"])
    assert batch["resource"]["attributes"]["service.name"] == "processor-0"
    assert {(lk["context"]["trace_id"], lk["context"]["span_id"]) for lk in batch["links"]} >= {
        (ingest["context"]["trace_id"], ingest["context"]["span_id"])
    }
    assert batch["attributes"]["fincart.batch_size"] >= 1 and "fincart.partition" in batch["attributes"]
    assert publish["attributes"] == {
        "fincart.order_id": order_id,
        "fincart.webhook_id": webhook_id,
        "fincart.version": 1,
    }

    # sync's span is the publish span's child, through the change event's traceparent
    assert fanout["parent_id"] == publish["context"]["span_id"]
    assert fanout["resource"]["attributes"]["service.name"] == "sync"
    assert fanout["attributes"]["fincart.order_id"] == order_id
    assert fanout["attributes"]["fincart.webhook_id"] == webhook_id
    assert fanout["attributes"]["fincart.seq"] >= 1
    # ISO 8601 UTC: text order is time order
    assert ingest["start_time"] <= batch["start_time"] <= publish["start_time"] <= fanout["start_time"]
