"""Processor settings (environment only, prefix FINCART_)."""

from __future__ import annotations

from typing import Literal

from fincart_core.settings import CommonSettings
from pydantic import Field, model_validator


class ProcessorSettings(CommonSettings):
    http_port: int = Field(8081, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics")
    service_name: str = Field("fincart-processor", description="service.name of traces and logs")
    batch_size: int = Field(500, ge=1, le=10_000, description="Messages fetched and applied per transaction")
    fetch_timeout_s: float = Field(1.0, gt=0, description="Longest wait for a batch to fill")
    ack_wait_s: float = Field(10.0, gt=0, description="JetStream redelivers a message not acked within this")
    # explicit: AckAll saved 3-7 % of CPU but lets one batch's ack cover a delivery lost in transit (a pull
    # response dropped with a broken connection) instead of having it redelivered (docs/architecture.md)
    ack_policy: Literal["all", "explicit"] = Field(
        "explicit",
        description="JetStream ack policy of the partition consumers: one per message, or one per batch (all)",
    )
    retry_attempts: int = Field(5, ge=1, description="In-process retries of a batch on a transient error")
    retry_backoff_s: float = Field(0.2, gt=0, description="First retry delay, doubled per attempt")
    db_pool_size: int = Field(8, ge=1, le=200, description="PostgreSQL connections of this process")
    db_acquire_timeout_s: float = Field(
        5.0, gt=0, description="Longest wait for a pool connection, connecting included; then the batch is retried"
    )
    db_query_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Bound on one statement, in the client and in PostgreSQL (statement_timeout), which also ends "
        "a session idle in a transaction this long, so a replica cut off mid-transaction holds no lock longer",
    )
    lag_interval_s: float = Field(5.0, gt=0, description="How often consumer lag is read for /metrics")
    lease_ttl_s: float = Field(
        10.0,
        gt=0,
        description="A partition lease not renewed within this expires: a dead replica's partitions "
        "move to live replicas within lease_ttl_s + lease_renew_s",
    )
    lease_renew_s: float = Field(
        2.0,
        gt=0,
        description="How often a replica renews its leases, acquires free ones and hands over extras",
    )

    @model_validator(mode="after")
    def _renew_within_ttl(self) -> ProcessorSettings:
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError(
                f"lease_renew_s {self.lease_renew_s} must be at most half of lease_ttl_s {self.lease_ttl_s}"
            )
        # A replica cut off in a lease round holds the lease table's lock until PostgreSQL ends its session
        # (db_query_timeout_s): the other replicas' next round must still renew their leases before they expire.
        if self.db_query_timeout_s + self.lease_renew_s >= self.lease_ttl_s:
            raise ValueError(
                f"db_query_timeout_s {self.db_query_timeout_s} + lease_renew_s {self.lease_renew_s} must be less "
                f"than lease_ttl_s {self.lease_ttl_s}"
            )
        return self
