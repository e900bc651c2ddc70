"""Fuzzing the real ingest (NATS JetStream + Redis) with signed random bodies and random headers, a real
processor behind it: no answer is ever a 5xx, every 200 "accepted" is on the ORDERS stream, and the processor
applies every one of them (audited processed or discarded, never failed)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.signing import sign
from fincart_devstack.localstack import ServiceProcess, find_binary, free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.ingest_service import SECRET, start_ingest
from tests.support.webhook_bodies import BODIES

WAIT_S = 120.0
# what an HTTP client may send in a header value (h11 refuses control characters and surrounding whitespace)
HEADER_TEXT = st.binary(max_size=300).map(lambda b: bytes(c for c in b if c in HEADER_BYTES).strip(b" \t"))
HEADER_BYTES = frozenset([9, *range(0x20, 0x7F), *range(0x80, 0x100)])


@st.composite
def requests(draw: st.DrawFn, counter: Iterator[int]) -> tuple[bytes, dict[str, bytes]]:
    body = draw(BODIES)
    signature = draw(st.sampled_from(["good"] * 8 + ["wrong", "missing"]))
    headers: dict[str, bytes] = {"Content-Type": b"application/json"}
    if signature != "missing":
        headers["X-Shopify-Hmac-Sha256"] = sign(body, SECRET if signature == "good" else "other").encode()
    webhook_id = draw(st.one_of(st.just(b""), HEADER_TEXT, st.just(b"x" * 300)))
    if draw(st.booleans()) or not webhook_id:  # mostly unique ids: a repeat is a (fine) duplicate
        webhook_id = f"f{next(counter)}-".encode() + webhook_id[:200]
    headers["X-Shopify-Webhook-Id"] = webhook_id
    topics = [b"orders/updated", b"orders/create", b"orders/paid"]
    headers["X-Shopify-Topic"] = draw(st.sampled_from(topics)) if draw(st.integers(0, 9)) else draw(HEADER_TEXT)
    for name in ("X-Shopify-Shop-Domain", "X-Shopify-Triggered-At", "traceparent", "tracestate", "X-Random"):
        if draw(st.booleans()):
            headers[name] = draw(HEADER_TEXT)
    return body, headers


@pytest.fixture
def processor(service_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceProcess]:
    port = free_port()
    service = ServiceProcess(
        name="processor",
        argv=[find_binary("fincart-processor")],
        env={**service_env, "FINCART_HTTP_PORT": str(port), "FINCART_FETCH_TIMEOUT_S": "0.2"},
        log_path=tmp_path / "processor.log",
        port=port,
    )
    service.start()
    yield service
    service.stop()


async def test_random_signed_requests_never_get_a_5xx_and_every_200_is_applied(
    service_env, tmp_path, processor, infra, topology, db
):
    ingest = start_ingest(service_env, tmp_path)
    accepted: list[str] = []
    answers: dict[int, int] = {}
    counter = itertools.count()
    try:
        with httpx.Client(base_url=ingest.base_url, timeout=30) as http:

            @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
            @given(request=requests(counter))
            def post(request: tuple[bytes, dict[str, bytes]]) -> None:
                body, headers = request
                answer = http.post("/webhooks/shopify", content=body, headers=headers)
                answers[answer.status_code] = answers.get(answer.status_code, 0) + 1
                assert answer.status_code < 500, (answer.status_code, answer.text, body[:300], headers)
                assert answer.json()  # every answer is JSON
                if answer.status_code == 200 and answer.json()["status"] == "accepted":
                    accepted.append(headers["X-Shopify-Webhook-Id"].decode("latin-1").strip())

            await asyncio.to_thread(post)
    finally:
        ingest.stop()
    # the fuzz reached both sides (hypothesis draws anew each run: 46 to 60-odd of 400 were accepted)
    assert answers.get(200, 0) > 20 and answers.get(422, 0) > 20, answers

    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(topology.orders_stream)
        stored = {
            WebhookMessage.model_validate_json((await js.get_msg(topology.orders_stream, seq)).data).webhook_id
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        }
    finally:
        await nc.close()
    assert set(accepted) <= stored

    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (audited := await db.fetchval("SELECT count(*) FROM audit_log")) < len(stored):
        assert asyncio.get_running_loop().time() < deadline, f"{audited} of {len(stored)} audited"
        await asyncio.sleep(0.5)
    statuses = dict(await db.fetch("SELECT webhook_id, status FROM audit_log"))
    assert {statuses.get(webhook_id) for webhook_id in accepted} <= {"processed", "discarded"}, [
        (w, statuses.get(w)) for w in accepted if statuses.get(w) not in ("processed", "discarded")
    ]
