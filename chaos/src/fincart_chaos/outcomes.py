"""What happened to each webhook, Jepsen-style: the runner's answer, then what the store holds.

Answer (from the runners' ledgers): ``ok`` (a 2xx), ``rejected`` (a 4xx), ``unknown`` (no answer, a
timeout, a reset, or only transient 5xx/429 until the sender gave up: it may or may not be in JetStream).
Outcome (answer x store): ``stored`` (ok, applied), ``lost`` (ok, never applied), ``recovered`` (unknown,
applied), ``unknown`` (unknown, not applied: never counted as lost), ``rejected`` (rejected, not applied),
``unexpected`` (applied, yet rejected, forged or never sent). A lost webhook's ``position`` says when it
was acknowledged relative to the stored acknowledged webhooks of its order: ``before`` all of them,
``between`` two, ``after`` all, ``alone`` (none of its order was stored).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from fincart_core.contracts.report import FaultRecord

from fincart_chaos.ledger import LedgerEntry

Answer = Literal["ok", "rejected", "unknown"]
Outcome = Literal["stored", "lost", "recovered", "unknown", "rejected", "unexpected"]
Position = Literal["before", "between", "after", "alone"]
OUTCOMES: tuple[Outcome, ...] = ("stored", "lost", "recovered", "unknown", "rejected", "unexpected")


@dataclass(frozen=True)
class WebhookOutcome:
    webhook_id: str
    order_id: str
    valid: bool
    answer: Answer
    outcome: Outcome
    status: int  # the deciding HTTP status (0: none)
    sent_at: float
    done_at: float  # when the deciding answer came (the first 2xx of a webhook sent twice)
    latency_ms: float
    requests: int
    position: Position | None = None  # lost webhooks only


def answer_of(entry: LedgerEntry) -> Answer:
    if 200 <= entry.status < 300:
        return "ok"
    return "rejected" if 400 <= entry.status < 500 else "unknown"


def _merge(entries: Sequence[LedgerEntry]) -> tuple[Answer, LedgerEntry]:
    """A webhook sent more than once (a duplicate delivery): ok if any request was, else its last answer."""
    acked = [e for e in entries if answer_of(e) == "ok"]
    if acked:
        return "ok", min(acked, key=lambda e: e.done_at)
    last = max(entries, key=lambda e: e.done_at)
    return answer_of(last), last


def classify(ledger: Sequence[LedgerEntry], applied: set[str]) -> list[WebhookOutcome]:
    """One outcome per webhook id in the ledger; ``applied``: the webhook ids the audit log holds."""
    by_id: dict[str, list[LedgerEntry]] = defaultdict(list)
    for entry in ledger:
        by_id[entry.webhook_id].append(entry)
    found = []
    for webhook_id, entries in by_id.items():
        answer, deciding = _merge(entries)
        valid = all(e.valid for e in entries)
        stored = webhook_id in applied
        if not valid or answer == "rejected":
            outcome: Outcome = "unexpected" if stored else "rejected"
        elif answer == "ok":
            outcome = "stored" if stored else "lost"
        else:
            outcome = "recovered" if stored else "unknown"
        found.append(
            WebhookOutcome(
                webhook_id=webhook_id,
                order_id=deciding.order_id,
                valid=valid,
                answer=answer,
                outcome=outcome,
                status=deciding.status,
                sent_at=min(e.sent_at for e in entries),
                done_at=deciding.done_at,
                latency_ms=deciding.latency_ms,
                requests=len(entries),
            )
        )
    return _with_positions(found)


def _with_positions(found: list[WebhookOutcome]) -> list[WebhookOutcome]:
    stored_acks: dict[str, list[float]] = defaultdict(list)
    for o in found:
        if o.outcome == "stored":
            stored_acks[o.order_id].append(o.done_at)
    placed = []
    for o in found:
        if o.outcome == "lost":
            acks = stored_acks.get(o.order_id, [])
            position: Position = (
                "alone"
                if not acks
                else "before"
                if o.done_at < min(acks)
                else "after"
                if o.done_at > max(acks)
                else "between"
            )
            o = WebhookOutcome(**{**o.__dict__, "position": position})
        placed.append(o)
    return placed


def tally(outcomes: Iterable[WebhookOutcome]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    for o in outcomes:
        counts[o.outcome] += 1
    return counts


def window(record: FaultRecord) -> tuple[float, float] | None:
    """A fault's active window (epoch seconds), or None when it never acted."""
    if record.started_at is None or record.result in ("skipped", "failed"):
        return None
    return record.started_at, record.healed_at if record.healed_at is not None else record.started_at


def in_flight(ledger: Sequence[LedgerEntry], start: float, end: float) -> int:
    """Requests that overlapped [start, end]: sent before its end and answered (or given up) after its start."""
    return sum(1 for e in ledger if e.sent_at <= end and e.done_at >= start)


def active_faults(records: Sequence[FaultRecord], start: float, end: float) -> list[str]:
    """The faults whose window overlapped [start, end]."""
    names = []
    for record in records:
        span = window(record)
        if span and span[0] <= end and span[1] >= start:
            names.append(record.name)
    return names
