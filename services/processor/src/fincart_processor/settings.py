"""Processor settings (environment only, prefix FINCART_)."""

from __future__ import annotations

import os
import re

from fincart_core.settings import CommonSettings
from pydantic import Field, model_validator

_ORDINAL = re.compile(r"-(\d+)$")


class ProcessorSettings(CommonSettings):
    http_port: int = Field(8081, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics")
    service_name: str = Field("fincart-processor", description="service.name of traces and logs")
    replicas: int = Field(1, ge=1, le=1024, description="Processor replicas; replica i owns partitions p % N == i")
    replica_index: int | None = Field(
        None, ge=0, description="This replica's index; unset: the StatefulSet ordinal at the end of HOSTNAME"
    )
    batch_size: int = Field(500, ge=1, le=10_000, description="Messages fetched and applied per transaction")
    fetch_timeout_s: float = Field(1.0, gt=0, description="Longest wait for a batch to fill")
    ack_wait_s: float = Field(10.0, gt=0, description="JetStream redelivers a message not acked within this")
    max_deliver: int = Field(5, ge=1, description="Deliveries of an unparseable message before it is dead-lettered")
    retry_attempts: int = Field(5, ge=1, description="In-process retries of a batch on a transient error")
    retry_backoff_s: float = Field(0.2, gt=0, description="First retry delay, doubled per attempt")
    db_pool_size: int = Field(8, ge=1, le=200, description="PostgreSQL connections of this process")
    lag_interval_s: float = Field(5.0, gt=0, description="How often consumer lag is read for /metrics")

    @model_validator(mode="after")
    def _index(self) -> ProcessorSettings:
        if self.replica_index is None:
            match = _ORDINAL.search(os.environ.get("HOSTNAME", ""))
            self.replica_index = int(match.group(1)) if match else 0
        if self.replica_index >= self.replicas:
            raise ValueError(f"replica_index {self.replica_index} must be below replicas {self.replicas}")
        return self

    @property
    def index(self) -> int:
        assert self.replica_index is not None
        return self.replica_index
