"""Fuzzing the real ingest (NATS JetStream + Redis) with signed random bodies and random headers, a real
processor behind it: no answer is ever a 5xx, every 200 "accepted" is on the ORDERS stream, and the processor
applies every one of them (audited processed or discarded, never failed)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
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

WAIT_S = 120.0
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
UPDATED_AT = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.none() | OFFSETS)
    .map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(1969, 12, 31), max_value=datetime(1970, 1, 2), timezones=OFFSETS)
    .map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00", "9999-12-30T00:00:00Z",
                     "1970-01-01T00:00:00Z", "2026-02-30T00:00:00Z", ""]),
    st.integers(-(10**12), 10**13), JSON_VALUES,
)
ORDERS = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(-(10**20), 10**20), st.text(min_size=0, max_size=300), st.sampled_from(["o1", "o2"])),
     "updated_at": UPDATED_AT},
    optional={
        "financial_status": st.none() | st.sampled_from(["paid", "pending", "refunded"]) | st.text(max_size=5),
        "fulfillment_status": st.none() | st.sampled_from(["fulfilled", "partial"]) | JSON_VALUES,
        "total_price": st.none() | st.decimals(allow_nan=False, allow_infinity=False).map(str)
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
        "shipping_lines": st.lists(st.fixed_dictionaries({"price": st.decimals(allow_nan=False).map(str)
                                                          | JSON_SCALARS}), max_size=3) | JSON_VALUES,
        "note": JSON_VALUES,
    },
)
PLAUSIBLE = st.fixed_dictionaries(
    {"id": st.integers(1, 10**15) | st.text(min_size=1, max_size=40),
     "updated_at": st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 29),
                                timezones=OFFSETS).map(lambda d: d.isoformat()),
     "total_price": st.decimals(min_value=0, max_value=10**9, places=2).map(str),
     "financial_status": st.sampled_from(["paid", "pending", "refunded", "voided"])},
    optional={"shipping_lines": st.lists(st.fixed_dictionaries(
        {"price": st.decimals(min_value=0, max_value=1000, places=2).map(str)}), max_size=3),
              "note": JSON_VALUES, "line_items": JSON_VALUES},
)
# raw pieces a JSON encoder never writes, spliced in as the value of "note"
RAW = st.sampled_from([b"NaN", b"-Infinity", b"1e400", b"9" * 5000, b'"\\ud800"', b'"\\udfff\\ud800"',
                       b'"\\ud83d\\ude00"', b'"\\u0000"', b"[" * 300 + b"]" * 300, b"[" * 99 + b"]" * 99,
                       b'{"a":' * 150 + b"1" + b"}" * 150, b"1e5", b"-0", b'"\xff\xfe"', b"\x00"])
# what an HTTP client may send in a header value (h11 refuses control characters and surrounding whitespace)
HEADER_TEXT = st.binary(max_size=300).map(lambda b: bytes(c for c in b if c in HEADER_BYTES).strip(b" \t"))
HEADER_BYTES = frozenset([9, *range(0x20, 0x7F), *range(0x80, 0x100)])


def _body(order: dict[str, object], raw: bytes | None) -> bytes:
    body = json.dumps(order).encode()
    return body[:-1] + b', "note": ' + raw + b"}" if raw is not None else body


BODIES = st.one_of(
    PLAUSIBLE.map(lambda o: json.dumps(o).encode()), PLAUSIBLE.map(lambda o: json.dumps(o).encode()),
    st.builds(_body, PLAUSIBLE, RAW),
    st.builds(_body, ORDERS, st.none() | RAW),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    ORDERS.map(lambda o: json.dumps(o).encode("utf-16")),
)


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
    service = ServiceProcess(name="processor", argv=[find_binary("fincart-processor")],
                             env={**service_env, "FINCART_HTTP_PORT": str(port), "FINCART_FETCH_TIMEOUT_S": "0.2"},
                             log_path=tmp_path / "processor.log", port=port)
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
    assert answers.get(200, 0) > 50 and answers.get(422, 0) > 20, answers  # the fuzz reached both sides

    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(topology.orders_stream)
        stored = {WebhookMessage.model_validate_json((await js.get_msg(topology.orders_stream, seq)).data).webhook_id
                  for seq in range(info.state.first_seq, info.state.last_seq + 1)}
    finally:
        await nc.close()
    assert set(accepted) <= stored

    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (audited := await db.fetchval("SELECT count(*) FROM audit_log")) < len(stored):
        assert asyncio.get_running_loop().time() < deadline, f"{audited} of {len(stored)} audited"
        await asyncio.sleep(0.5)
    statuses = dict(await db.fetch("SELECT webhook_id, status FROM audit_log"))
    assert {statuses.get(webhook_id) for webhook_id in accepted} <= {"processed", "discarded"}, [
        (w, statuses.get(w)) for w in accepted if statuses.get(w) not in ("processed", "discarded")]
