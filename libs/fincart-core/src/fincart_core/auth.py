"""Read-side API keys: random bearer tokens that the sync service knows only as sha256 hashes.

Several hashes may be allowed at once (``FINCART_READ_TOKEN_HASHES``), so a token is rotated by adding the
new hash, moving clients over, then removing the old one. A sha256 of 256 random bits needs no salt nor
slow hash: it cannot be guessed, and a leaked hash list does not give a token away.

HTTP clients send ``Authorization: Bearer <token>``; WebSocket clients send that header too, or (browsers,
which cannot set headers on a WebSocket) offer the subprotocols ``fincart.v1`` and ``fincart.bearer.<token>``;
the server answers with ``fincart.v1`` only, so the token is never echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

TOKEN_PREFIX = "fct_"  # recognisable in a leaked-secret scan
WS_PROTOCOL = "fincart.v1"
WS_TOKEN_PROTOCOL = "fincart.bearer."
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def new_token() -> str:
    """A fresh token: 256 random bits, URL-safe (also a valid subprotocol token)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the server stores: the sha256 of the token, lowercase hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def matching_hash(token: str, allowed: Iterable[str]) -> str | None:
    """The allowed hash this token has (compared in constant time), or None."""
    digest = token_hash(token)
    found = None
    for candidate in allowed:
        if hmac.compare_digest(digest, candidate):
            found = candidate
    return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None when absent or another scheme)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def ws_token(authorization: str | None, subprotocols: Iterable[str]) -> str | None:
    """A WebSocket client's token: the Authorization header, else the ``fincart.bearer.`` subprotocol."""
    token = bearer_token(authorization)
    if token:
        return token
    return next((p.removeprefix(WS_TOKEN_PROTOCOL) for p in subprotocols if p.startswith(WS_TOKEN_PROTOCOL)), None)


def ws_subprotocols(token: str) -> list[str]:
    """What a client offers to authenticate without headers."""
    return [WS_PROTOCOL, WS_TOKEN_PROTOCOL + token]


def main() -> None:
    """``fincart-token``: print a new token and the hash to put in FINCART_READ_TOKEN_HASHES."""
    token = new_token()
    print(f"token: {token}\nsha256: {token_hash(token)}")
