"""Operator settings (environment only, prefix FINCART_). The chart sets the first five; the rest have defaults
that suit a cluster and are lowered by the tests."""

from __future__ import annotations

from typing import Literal

from fincart_core.contracts.boundaries import Boundaries
from fincart_core.settings import CommaList, CommonSettings
from pydantic import Field


class OperatorSettings(CommonSettings):
    http_port: int = Field(8083, ge=0, le=65535, description="Port of /healthz and /metrics")
    service_name: str = Field("fincart-operator", description="service.name of logs")
    watch_namespace: str | None = Field(
        None, description="Namespace of the ChaosTests to run; empty: every namespace; unset: FINCART_POD_NAMESPACE"
    )
    pod_namespace: str | None = Field(None, description="The operator's own namespace (downward API)")
    runner_image: str = Field("fincart-chaos:latest", description="Image of the load, fault and verify Jobs")
    runner_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    runner_nats_user: str = Field("chaos", description="NATS user of the load and verify runners")
    runner_nats_password_secret: str | None = Field(
        None, description="Secret with that user's password (the chart's -internal); unset: runners get the URL as is"
    )
    runner_nats_password_key: str = Field("nats-chaos-password", description="Key of the password in that Secret")
    poll_interval_s: float = Field(2.0, gt=0, description="How often a running ChaosTest's children are checked")
    api_timeout_s: float = Field(30, gt=0, description="Longest Kubernetes API call of the operator's own")
    load_deadline_s: float = Field(0, ge=0, description="Longest load run; 0: estimated from the spec (see below)")
    load_startup_s: float = Field(300, ge=0, description="Added to the estimate: scheduling and image pulls")
    load_assumed_rate: float = Field(100, gt=0, description="Requests/s per runner assumed when spec.load.rate is 0")
    load_deadline_max_s: float = Field(6 * 3600, gt=0, description="Cap of the estimated load deadline")
    verify_deadline_s: float = Field(600, gt=0, description="Verification Job deadline on top of spec.settle.timeout")
    fault_job_deadline_s: float = Field(120, gt=0, description="Fault Job deadline on top of the fault's duration")
    max_fault_repeats: int = Field(100, ge=1, description="Occurrences of one repeating fault (bounds status size)")
    kill_switch: bool = Field(False, description="Abort every running ChaosTest and heal its faults; start none")
    proxy_url: str | None = Field(None, description="Control API of the chart's fault proxy (network faults)")
    proxy_timeout_s: float = Field(10, gt=0, description="Longest call to the fault proxy")

    # What a ChaosTest may reach (fincart_core.contracts.boundaries); the chart sets the release's names.
    chaos_ingest_services: CommaList = Field(
        ["fincart-ingest"], description="Services a ChaosTest's ingestUrl may name (in the test's namespace)"
    )
    chaos_sync_services: CommaList = Field(
        ["fincart-sync"], description="Services a ChaosTest's syncUrl may name (in the test's namespace)"
    )
    chaos_allowed_origins: CommaList = Field(
        [], description="More origins (scheme://host:port) a ChaosTest's URLs may point at"
    )
    chaos_secret_names: CommaList = Field(["fincart"], description="Secrets a ChaosTest's secret refs may name")
    chaos_allow_db_faults: bool = Field(
        False, description="Allow faults on the database (dbConnectionDrop); off: such a ChaosTest ends in Error"
    )

    def boundaries(self, namespace: str) -> Boundaries:
        return Boundaries(
            namespace=namespace,
            ingest_services=frozenset(self.chaos_ingest_services),
            sync_services=frozenset(self.chaos_sync_services),
            allowed_origins=frozenset(self.chaos_allowed_origins),
            secret_names=frozenset(self.chaos_secret_names),
            allow_db_faults=self.chaos_allow_db_faults,
        )

    @property
    def namespace(self) -> str | None:
        """The namespace to watch, or None for every namespace."""
        chosen = self.pod_namespace if self.watch_namespace is None else self.watch_namespace
        return chosen or None
