"""The verification result: written by ``fincart-chaos verify``, summarised by the operator."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Verdict = Literal["Pass", "Fail", "Inconclusive", "Error"]
EXIT_CODES: dict[str, int] = {"Pass": 0, "Fail": 1, "Inconclusive": 1, "Error": 2}


class Counts(BaseModel):
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    stale_overwrites: int = 0
    unknown: int = 0  # no answer (timeout, reset) and not applied: never counted as lost
    recovered: int = 0  # no answer, yet applied


class Anomaly(BaseModel):
    invariant: str
    message: str
    count: int
    samples: list[str] = Field(default_factory=list, max_length=10)


class FaultRecord(BaseModel):
    name: str
    type: str
    started_at: float | None = None
    healed_at: float | None = None
    result: Literal["injected", "healed", "failed", "skipped"] = "injected"
    message: str | None = None


class ScheduledFault(BaseModel):
    """One fault of the schedule as it was planned (a random schedule is printed and kept like this)."""

    name: str
    type: str
    start_after_s: float
    duration_s: float


class ReportSummary(BaseModel):
    """The part of the report the operator copies into the ChaosTest status."""

    verdict: Verdict
    reason: str | None = None
    counts: Counts = Field(default_factory=Counts)
    anomalies: list[Anomaly] = Field(default_factory=list)
    # why the run proves less than it claims (an unchecked invariant, a fault that hit nothing, no catch-up)
    inconclusive: list[Anomaly] = Field(default_factory=list)
    faults: list[FaultRecord] = Field(default_factory=list)
    bundle: str | None = None  # where the full evidence bundle (HTML, JUnit, JSON) is
    schedule: list[ScheduledFault] = Field(default_factory=list)
