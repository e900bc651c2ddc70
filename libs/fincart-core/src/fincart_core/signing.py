"""Shopify webhook signatures: base64(HMAC-SHA256(secret, raw body)), compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def sign(body: bytes, secret: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    """True when ``signature`` is the body's HMAC. Wrong length, bad base64 or missing: False."""
    if not signature:
        return False
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    # compare_digest handles unequal lengths without raising (the seed answered those with a 500)
    return hmac.compare_digest(given, expected)
