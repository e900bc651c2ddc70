"""Hypothesis strategies for webhook bodies: plausible Shopify orders, orders with random fields, raw JSON
a standard encoder never writes (NaN, huge integers, lone surrogates, deep nesting), any JSON, any bytes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
UPDATED_AT = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.none() | OFFSETS).map(
        lambda d: d.isoformat()
    ),
    st.datetimes(min_value=datetime(1969, 12, 31), max_value=datetime(1970, 1, 2), timezones=OFFSETS).map(
        lambda d: d.isoformat()
    ),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:30:00-01:00",
            "9999-12-30T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "",
        ]
    ),
    st.integers(-(10**12), 10**13),
    JSON_VALUES,
)
ORDERS = st.fixed_dictionaries(
    {
        "id": st.one_of(
            st.integers(-(10**20), 10**20), st.text(min_size=0, max_size=300), st.sampled_from(["o1", "o2"])
        ),
        "updated_at": UPDATED_AT,
    },
    optional={
        "financial_status": st.none() | st.sampled_from(["paid", "pending", "refunded"]) | st.text(max_size=5),
        "fulfillment_status": st.none() | st.sampled_from(["fulfilled", "partial"]) | JSON_VALUES,
        "total_price": st.none()
        | st.decimals(allow_nan=False, allow_infinity=False).map(str)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12),
        "shipping_lines": st.lists(
            st.fixed_dictionaries({"price": st.decimals(allow_nan=False).map(str) | JSON_SCALARS}), max_size=3
        )
        | JSON_VALUES,
        "note": JSON_VALUES,
    },
)
PLAUSIBLE = st.fixed_dictionaries(
    {
        "id": st.integers(1, 10**15) | st.text(min_size=1, max_size=40),
        "updated_at": st.datetimes(
            min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 29), timezones=OFFSETS
        ).map(lambda d: d.isoformat()),
        "total_price": st.decimals(min_value=0, max_value=10**9, places=2).map(str),
        "financial_status": st.sampled_from(["paid", "pending", "refunded", "voided"]),
    },
    optional={
        "shipping_lines": st.lists(
            st.fixed_dictionaries({"price": st.decimals(min_value=0, max_value=1000, places=2).map(str)}), max_size=3
        ),
        "note": JSON_VALUES,
        "line_items": JSON_VALUES,
    },
)
# raw pieces a JSON encoder never writes, spliced in as the value of "note"
RAW = st.sampled_from(
    [
        b"NaN",
        b"-Infinity",
        b"1e400",
        b"9" * 5000,
        b"9" * 4000,
        b'"\\ud800"',
        b'"\\udfff\\ud800"',
        b'"\\ud83d\\ude00"',
        b'"\xed\xa0\x80"',
        b'"\\u0000"',
        b"[" * 300 + b"]" * 300,
        b"[" * 99 + b"]" * 99,
        b'{"a":' * 150 + b"1" + b"}" * 150,
        b"1e5",
        b"-0",
        b'"\xff\xfe"',
        b"\x00",
    ]
)


def _body(order: dict[str, object], raw: bytes | None) -> bytes:
    body = json.dumps(order).encode()
    return body[:-1] + b', "note": ' + raw + b"}" if raw is not None else body


BODIES = st.one_of(
    PLAUSIBLE.map(lambda o: json.dumps(o).encode()),
    PLAUSIBLE.map(lambda o: json.dumps(o).encode()),
    st.builds(_body, PLAUSIBLE, RAW),
    st.builds(_body, ORDERS, st.none() | RAW),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    ORDERS.map(lambda o: json.dumps(o).encode("utf-16")),
)
