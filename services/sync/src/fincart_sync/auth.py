"""Bearer-token checks of the read side (tokens, hashing and header parsing in fincart_core.auth).

A reader is identified by the id of its token's hash (its first 12 hex characters): the per-token
connection cap counts by it and logs may name it; the token itself is never logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fincart_core.auth import matching_hash

from fincart_sync import metrics

READER_ID_LEN = 12
MISSING = "missing bearer token: send Authorization: Bearer <token>"
INVALID = "invalid token"


class Unauthorized(Exception):
    """No token, or one whose hash is not allowed (HTTP 401, WebSocket close 4401)."""


def reader_id(token: str | None, allowed: Sequence[str]) -> str:
    """The id of an allowed token; Unauthorized with the reason otherwise."""
    if not token:
        metrics.AUTH_FAILURES.labels(reason="missing").inc()
        raise Unauthorized(MISSING)
    digest = matching_hash(token, allowed)
    if digest is None:
        metrics.AUTH_FAILURES.labels(reason="invalid").inc()
        raise Unauthorized(INVALID)
    return digest[:READER_ID_LEN]


_bearer = HTTPBearer(auto_error=False, description="A read token (`fincart-token` makes one)")


def require_reader(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """FastAPI dependency of the /orders routes: 401 with a reason unless the bearer token is allowed."""
    try:
        return reader_id(
            credentials.credentials if credentials else None, request.app.state.sync.settings.read_token_hashes
        )
    except Unauthorized as exc:
        error = "" if str(exc) == MISSING else ', error="invalid_token"'
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": f"Bearer{error}"}) from exc
