"""Ingest settings (environment only, prefix FINCART_)."""

from __future__ import annotations

from typing import Self

from fincart_core.settings import CommonSettings
from pydantic import Field, model_validator


class IngestSettings(CommonSettings):
    http_port: int = Field(8080, ge=0, le=65535, description="Port of the webhook endpoint")
    service_name: str = Field("fincart-ingest", description="service.name of traces and logs")
    webhook_secret: str = Field("", description="Shared HMAC secret of the shop (required)")
    dedupe_ttl_seconds: int = Field(
        172_800, ge=86_400, description="How long a webhook id is remembered (Shopify retries for hours)"
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Larger bodies are answered 413")
    publish_timeout_s: float = Field(5.0, gt=0, description="Bound on waiting for JetStream's PubAck")
    redis_timeout_s: float = Field(0.5, gt=0, description="Bound on one Redis call; Redis is optional")
    redis_max_connections: int = Field(64, ge=1, description="Redis connections of one ingest process")

    @model_validator(mode="after")
    def _orders_outlive_dedupe(self) -> Self:
        # a webhook id Redis still remembers must still be in ORDERS (to trace and replay what was accepted)
        if self.orders_max_age_seconds < self.dedupe_ttl_seconds:
            raise ValueError("FINCART_ORDERS_MAX_AGE_SECONDS must be at least FINCART_DEDUPE_TTL_SECONDS")
        return self
