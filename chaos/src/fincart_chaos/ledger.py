"""What the load runners saw: one entry per request, kept as JSON lines (one file per runner)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field

from fincart_chaos.workload import RequestKind


class LedgerEntry(BaseModel):
    webhook_id: str
    order_id: str
    kind: RequestKind
    runner: int = 0
    status: int  # the final HTTP status; 0 when no answer came (connection error or timeout)
    first_status: int
    answer: str | None = None  # "accepted" or "duplicate" from a 200 body
    attempts: int
    sent_at: float  # epoch seconds of the first attempt
    done_at: float  # epoch seconds of the final answer
    latency_ms: float  # of the final attempt
    # (epoch seconds, status) of each attempt that was not final: what the fault windows are measured by
    failures: list[tuple[float, int]] = Field(default_factory=list)

    @property
    def valid(self) -> bool:
        """A valid webhook (not forged, not poison): it must be acknowledged."""
        return self.kind in ("valid", "duplicate")

    @property
    def acked(self) -> bool:
        """A 2xx for a valid webhook: ingest promised it is durably in JetStream."""
        return self.valid and 200 <= self.status < 300


def write(entries: Iterable[LedgerEntry], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for entry in entries:
            out.write(entry.model_dump_json() + "\n")


def read(paths: Iterable[Path]) -> list[LedgerEntry]:
    entries = []
    for path in paths:
        with path.open() as lines:
            entries.extend(LedgerEntry.model_validate_json(line) for line in lines if line.strip())
    return entries
