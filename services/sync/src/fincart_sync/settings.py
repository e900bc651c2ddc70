"""Sync settings (environment only, prefix FINCART_)."""

from __future__ import annotations

from fincart_core.auth import HASH_PATTERN
from fincart_core.settings import CommaList, CommonSettings
from pydantic import Field, field_validator


class SyncSettings(CommonSettings):
    http_port: int = Field(8082, ge=0, le=65535, description="Port of the HTTP/WebSocket server")
    service_name: str = Field("fincart-sync", description="service.name of traces and logs")
    client_queue_size: int = Field(
        2048, ge=1, le=1_000_000, description="Events buffered per WebSocket client before it counts as slow"
    )
    heartbeat_interval_s: float = Field(15.0, gt=0, description="Seconds between heartbeat messages")
    snapshot_page_size: int = Field(500, ge=1, le=10_000, description="Orders per snapshot message")
    replay_max_events: int = Field(
        10_000, ge=0, description="Longest `since` replay served from the stream; further back gets a snapshot"
    )
    replay_timeout_s: float = Field(30.0, gt=0, description="Bound on one resume replay")
    db_pool_size: int = Field(10, ge=1, le=200, description="PostgreSQL connections of this process")
    db_acquire_timeout_s: float = Field(
        2.0, gt=0, description="Longest wait for a pool connection; then GET /orders answers 503 (never hangs)"
    )
    db_query_timeout_s: float = Field(10.0, gt=0, description="Bound on one database statement")
    ws_send_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for a client to take one frame; then it is closed as slow (4008)"
    )
    ws_max_message_bytes: int = Field(
        4096,
        ge=128,
        le=16 * 1024 * 1024,
        description="Largest frame a client may send (clients only send pings); larger ones close with 1009",
    )
    ws_max_connections: int = Field(
        2000, ge=1, description="WebSocket connections of this process; more are closed with 1013 (try again)"
    )
    ws_allowed_origins: CommaList = Field(
        [],
        description="Origins (scheme://host[:port], comma separated) besides the service's own that may open "
        "/sync from a browser; a request without Origin (not a browser) is not checked",
    )
    read_token_hashes: CommaList = Field(
        min_length=1,
        description="sha256 hex digests of the bearer tokens allowed to read (comma separated; several at "
        "once for rotation; `fincart-token` makes a pair). Required: /orders* and /sync answer 401 without one",
    )
    ws_max_connections_per_token: int = Field(
        100, ge=1, description="WebSocket connections one token may hold at once; more are closed with 4429"
    )

    @field_validator("read_token_hashes")
    @classmethod
    def _check_hashes(cls, value: list[str]) -> list[str]:
        value = [h.lower() for h in value]
        bad = [h[:12] for h in value if not HASH_PATTERN.match(h)]
        if bad:
            raise ValueError(f"not sha256 hex digests (64 hex characters): {bad}")
        return value
