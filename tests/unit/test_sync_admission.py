"""Origin check and connection caps of /sync (pure logic)."""

from __future__ import annotations

import pytest
from fincart_sync.admission import ConnectionCaps, Refusal, origin_allowed


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "sync:8082", [], True),  # not a browser
        ("http://sync:8082", "sync:8082", [], True),  # same origin
        ("https://SYNC:8082", "sync:8082", [], True),
        ("http://sync:9999", "sync:8082", [], False),  # another port is another origin
        ("https://evil.example", "sync:8082", [], False),
        ("https://shop.example", "sync:8082", ["https://shop.example"], True),
        ("null", "sync:8082", [], False),  # sandboxed frames, file:// pages
        ("http://sync:8082", None, [], False),
    ],
)
def test_origin_allowed(origin: str | None, host: str | None, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok


def test_caps_in_total_and_per_key() -> None:
    caps = ConnectionCaps(total=3, per_key=2)
    assert caps.admit("a") is None and caps.admit("a") is None
    assert caps.admit("a") == Refusal("at most 2 connections per token", per_token=True)
    assert caps.admit("b") is None
    refused = caps.admit("c")
    assert refused is not None and "limit of 3" in refused.reason and not refused.per_token
    caps.release("a")
    assert caps.admit("c") is None
    for key in ("a", "b", "c"):
        caps.release(key)
    assert caps.count == 0 and not caps.by_key
