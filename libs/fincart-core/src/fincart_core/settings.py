"""Settings shared by every FinCart process. Environment only (prefix FINCART_).

Each service's own ``settings.py`` subclasses :class:`CommonSettings` with its few extra fields, so a
variable means the same thing everywhere it is read.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        "none", description="OpenTelemetry span exporter (otlp reads OTEL_EXPORTER_OTLP_ENDPOINT)"
    )
    service_name: str = Field("fincart", description="service.name of traces and logs")

    @property
    def sqlalchemy_url(self) -> str:
        return to_sqlalchemy_url(self.database_url)

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
