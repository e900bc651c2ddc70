"""Tokens and credentials helpers (pure): read-token parsing and matching, NATS users, URLs with userinfo."""

from __future__ import annotations

from fincart_core.auth import bearer_token, matching_hash, new_token, token_hash, ws_subprotocols, ws_token
from fincart_devstack.credentials import PERMISSIONS, StackCredentials, redact, with_userinfo


def test_tokens_are_random_and_matched_by_their_hash_only() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("fct_") and len(a) > 40
    allowed = [token_hash(b), token_hash(a)]
    assert matching_hash(a, allowed) == token_hash(a)
    assert matching_hash("fct_other", allowed) is None
    assert matching_hash(a, []) is None


def test_bearer_header_and_websocket_subprotocol() -> None:
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer ") is None and bearer_token(None) is None
    assert ws_token(None, ws_subprotocols("tok")) == "tok"
    assert ws_token("Bearer head", ws_subprotocols("proto")) == "head"  # the header wins
    assert ws_token(None, ["fincart.v1"]) is None


def test_nats_users_and_their_permissions() -> None:
    creds = StackCredentials()
    block = creds.nats_authorization()
    assert set(creds.nats) == {"admin", *PERMISSIONS} and len(set(creds.nats.values())) == 5
    for user, password in creds.nats.items():
        assert f'user: "{user}", password: "{password}"' in block
    ingest_publish = PERMISSIONS["ingest"][0]
    assert "orders.webhooks.*" in ingest_publish and not any("events" in s or "PURGE" in s for s in ingest_publish)
    assert not any("webhooks" in s for user in ("processor", "sync") for s in PERMISSIONS[user][0])
    assert not any("orders." in s for s in PERMISSIONS["sync"][0])  # sync publishes nothing of FinCart's
    chaos_publish = PERMISSIONS["chaos"][0]  # ledgers and bundles; never webhooks, acks, purges or deletes
    assert not any(
        s.startswith(("orders.", "*.orders.", "$JS.ACK")) or "PURGE" in s or "DELETE" in s for s in chaos_publish
    )


def test_urls_carry_and_hide_userinfo() -> None:
    url = with_userinfo("nats://127.0.0.1:4222,nats://127.0.0.1:4223", "sync", "p@ss/word")
    assert url == "nats://sync:p%40ss%2Fword@127.0.0.1:4222,nats://sync:p%40ss%2Fword@127.0.0.1:4223"
    assert with_userinfo(url, "ingest", "x") == "nats://ingest:x@127.0.0.1:4222,nats://ingest:x@127.0.0.1:4223"
    assert redact(url) == "nats://sync:***@127.0.0.1:4222,nats://sync:***@127.0.0.1:4223"
    assert redact(with_userinfo("redis://127.0.0.1:6379/0", "", "pw")) == "redis://:***@127.0.0.1:6379/0"
    assert redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
