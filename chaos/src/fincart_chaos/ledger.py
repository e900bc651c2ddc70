"""What the load runners saw: one entry per request, kept as JSON lines (one file per runner).

A file may start with a ``RunnerStart`` line: where the ORDER_EVENTS stream stood before the runner's
first request, so the verifier replays the events from there instead of from 0.
"""

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


class RunnerStart(BaseModel):
    runner: int
    stream_seq: int | None = None  # the ORDER_EVENTS stream's last sequence before the first request


def write(entries: Iterable[LedgerEntry], path: Path, start: RunnerStart | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        if start is not None:
            out.write(start.model_dump_json() + "\n")
        for entry in entries:
            out.write(entry.model_dump_json() + "\n")


def read(paths: Iterable[Path]) -> tuple[list[LedgerEntry], list[RunnerStart]]:
    """The entries of every file, and their start lines."""
    entries, starts = [], []
    for path in paths:
        with path.open() as lines:
            for line in lines:
                if '"webhook_id"' in line:
                    entries.append(LedgerEntry.model_validate_json(line))
                elif line.strip():
                    starts.append(RunnerStart.model_validate_json(line))
    return entries, starts


def replay_from(starts: Iterable[RunnerStart]) -> int | None:
    """The stream sequence to replay events from: the earliest runner's start, None when one is unknown."""
    seqs = [s.stream_seq for s in starts]
    return min(seqs) if seqs and None not in seqs else None  # type: ignore[type-var]
