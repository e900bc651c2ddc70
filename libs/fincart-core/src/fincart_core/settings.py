"""Settings shared by every FinCart process. Environment only (prefix FINCART_).

Each service's own ``settings.py`` subclasses :class:`CommonSettings` with its few extra fields, so a
variable means the same thing everywhere it is read.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# JetStream's Nats-Msg-Id window. Redis SET NX is the long (24 h+) dedupe; this window covers the ingest
# retries that happen while Redis is down, and the processor's re-published events. A stream's max age
# must be at least this long (JetStream refuses a duplicate window longer than max age).
DUPLICATE_WINDOW_S = 2 * 3600
DAY_S = 86_400


def split_commas(value: object) -> object:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: list settings are comma separated in the environment."""
    return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value


# A list setting given as "a,b,c" (a Kubernetes Secret or env value), not as JSON.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINCART_", extra="ignore")

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/fincart", description="PostgreSQL URL (postgresql://...)"
    )
    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server URL(s), comma separated")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL for webhook dedupe marks")
    partitions: int = Field(16, ge=1, le=1024, description="Partitions of the ORDERS stream (fixed per stream)")
    nats_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9_-]*$", description="Prefix for stream names and subjects (test isolation)"
    )
    http_host: str = Field("0.0.0.0", description="Address the HTTP server binds")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of the HTTP server (0: pick a free port)")
    log_level: str = Field("INFO", description="Log level of the JSON logs")
    otel_exporter: Literal["none", "console", "otlp", "file"] = Field(
        "none", description="OpenTelemetry span exporter (otlp reads OTEL_EXPORTER_OTLP_ENDPOINT; file: otel_file)"
    )
    otel_file: str = Field("fincart-spans.jsonl", description="JSON-lines span file of otel_exporter=file (appended)")
    service_name: str = Field("fincart", description="service.name of traces and logs")
    # JetStream streams (applied by fincart_core.streams at start-up, also to existing streams)
    stream_replicas: int = Field(
        1, ge=1, le=5, description="Replicas of every stream (3 on a 3-node NATS cluster; 1 on a single server)"
    )
    orders_max_age_seconds: int = Field(
        7 * DAY_S,
        ge=DUPLICATE_WINDOW_S,
        description="ORDERS stream: webhooks older than this are removed (at least the dedupe TTL)",
    )
    orders_max_bytes: int = Field(
        -1, ge=-1, description="ORDERS stream size limit (-1: none); when full, ingest answers 503, nothing is dropped"
    )
    events_max_age_seconds: int = Field(
        7 * DAY_S,
        ge=DUPLICATE_WINDOW_S,
        description="ORDER_EVENTS stream: how far back sync clients and chaos verifiers can resume",
    )
    events_max_bytes: int = Field(-1, ge=-1, description="ORDER_EVENTS size limit (-1: none); oldest removed first")
    dlq_max_age_seconds: int = Field(
        30 * DAY_S, ge=DUPLICATE_WINDOW_S, description="ORDERS_DLQ: dead letters kept this long (the longest)"
    )
    dlq_max_bytes: int = Field(-1, ge=-1, description="ORDERS_DLQ size limit (-1: none); oldest removed first")

    @model_validator(mode="after")
    def _dlq_kept_longest(self) -> Self:
        if self.dlq_max_age_seconds < max(self.orders_max_age_seconds, self.events_max_age_seconds):
            raise ValueError("FINCART_DLQ_MAX_AGE_SECONDS must be at least the ORDERS and ORDER_EVENTS max ages")
        return self

    @property
    def asyncpg_url(self) -> str:
        return to_asyncpg_url(self.database_url)


def to_sqlalchemy_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+asyncpg://`` (SQLAlchemy and alembic need the driver named)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+asyncpg{sep}{rest}" if scheme in ("postgres", "postgresql") else url


def to_asyncpg_url(url: str) -> str:
    """The reverse: asyncpg only understands ``postgresql://``."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql{sep}{rest}" if scheme.startswith("postgres") else url


def replace_userinfo(url: str, userinfo: str) -> str:
    """``nats://h:p,nats://h2:p`` -> the same URLs with ``userinfo@`` (``user:password``, inserted as given)
    instead of any they had."""
    out = []
    for part in url.split(","):
        scheme, sep, rest = part.partition("://")
        out.append(f"{scheme}{sep}{userinfo}@{rest.rpartition('@')[2]}")
    return ",".join(out)
