"""Checks over the whole history, as pure functions of plain data (history_data.py gathers it), registered
with the verifier (``@check``: they judge ``Context.extras``, and are skipped when it is absent).

Each returns :class:`Violation` s naming the invariant they break (chaos/README.md, Invariants):

* ``stored_columns``: every column the winning webhook determines, not only status and fee (I2).
* ``events_vs_history``: the event stream is the committed history: one event per applied version, none
  for a discarded webhook or a version that was never committed, each with its webhook's content (I6).
* ``reads_behind_events``: a client that reads an order as soon as its event arrives never finds the
  store older than the event; it would be if the event went out before the commit (I6).
* ``observer_views``: observers that disconnected and resumed (from ``since`` or a new snapshot) end with
  the stored state, without gaps, and never hold a version the steady observer did not see (I6).
* ``page_walk``: ``GET /orders`` paged end to end lists every order exactly once and, once the load is
  over, exactly as stored; during the load only committed states (I1).
* ``poison_outcomes``: each poison webhook was answered 4xx, or accepted and dead-lettered as a ``failed``
  audit row; never applied (I5), never accepted and then stuck or dropped (I3), never left unanswered (I7).
* ``fault_windows``: per fault, the requests it failed, retried and answered (report data), and
  ``idle_faults``: the faults on the request path that failed nothing (they count against coverage).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal

from fincart_core.contracts.report import FaultRecord
from pydantic import BaseModel

from fincart_chaos import oracle
from fincart_chaos.faults import COMPONENT_LABEL
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.observer import Seen
from fincart_chaos.verify import Context, Finding, check, found
from fincart_chaos.workload import Webhook, poison_kind


@dataclass(frozen=True)
class Violation:
    invariant: str
    message: str
    ids: list[str]


@dataclass(frozen=True)
class OrderColumns:
    """The columns of ``orders`` that the winning webhook determines (the rest are the store's own)."""

    status: str | None
    total_price: Decimal | None
    shipping_fee: Decimal | None
    last_external_updated_at: datetime | None
    last_webhook_id: str | None


@dataclass(frozen=True)
class AuditEntry:
    webhook_id: str
    order_id: str
    status: str  # processed | discarded | failed
    version: int | None = None  # the version a processed webhook produced


@dataclass
class StoreView:
    """The test's rows (order id -> columns, version) and audit rows, as stored."""

    rows: dict[str, OrderColumns]
    versions: dict[str, int]
    audit: list[AuditEntry]


@dataclass(frozen=True)
class ReadBack:
    """``GET /orders/{id}`` sent as soon as the event of ``event_version`` arrived; ``read_version`` None: 404."""

    order_id: str
    event_version: int
    read_version: int | None


@dataclass(frozen=True)
class PageItem:
    order_id: str
    version: int
    columns: OrderColumns


def expected_columns(webhook: Webhook) -> OrderColumns:
    """What the row holds when ``webhook`` won, status and fee by the verifier's own statement of the
    domain rules (oracle.py), not by the code under test."""
    status, fee = oracle.expected(webhook.payload)
    return OrderColumns(
        status=status,
        total_price=webhook.total_price,
        shipping_fee=fee,
        last_external_updated_at=webhook.updated_at,
        last_webhook_id=webhook.webhook_id,
    )


def _differing(actual: OrderColumns, expected: OrderColumns) -> list[str]:
    return [f.name for f in fields(OrderColumns) if getattr(actual, f.name) != getattr(expected, f.name)]


def _grouped(invariant: str, template: str, wrong: Iterable[tuple[str, str]]) -> list[Violation]:
    """(key, id) pairs -> one violation per key, ``template`` formatted with the key."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for key, ident in wrong:
        by_key[key].append(ident)
    return [Violation(invariant, template.format(key), ids) for key, ids in sorted(by_key.items())]


def stored_columns(winners: Mapping[str, OrderColumns], rows: Mapping[str, OrderColumns]) -> list[Violation]:
    """``winners``: order id -> the winning webhook's columns; ``rows``: order id -> the stored ones."""
    wrong = [
        (column, order_id)
        for order_id, expected in winners.items()
        if order_id in rows
        for column in _differing(rows[order_id], expected)
    ]
    return _grouped("I2", "stored {} differs from the winning webhook's", wrong)


def _event_columns(seen: Seen) -> OrderColumns:
    return OrderColumns(
        status=seen.status,
        total_price=seen.total_price,
        shipping_fee=Decimal(seen.shipping_fee),
        last_external_updated_at=seen.last_external_updated_at,
        last_webhook_id=seen.last_webhook_id,
    )


def events_vs_history(
    observed: Sequence[Seen], audit: Sequence[AuditEntry], expected: Mapping[str, OrderColumns]
) -> list[Violation]:
    """``observed``: what observers got (events are checked, snapshots are not events); ``expected``:
    webhook id -> the columns it sets. An event seen twice with the same stream sequence is one event."""
    committed = {(a.order_id, a.version): a.webhook_id for a in audit if a.status == "processed"}
    discarded = {a.webhook_id for a in audit if a.status != "processed"}
    sequences: dict[tuple[str, int], set[int]] = defaultdict(set)
    for_discarded, uncommitted, other_webhook, content = set(), set(), set(), set()
    for seen in observed:
        if seen.kind != "event":
            continue
        key = (seen.order_id, seen.version)
        label = f"{seen.order_id}@v{seen.version}"
        sequences[key].add(seen.seq)
        if seen.last_webhook_id in discarded:
            for_discarded.add(seen.last_webhook_id)
        elif key not in committed:
            uncommitted.add(label)
        elif committed[key] != seen.last_webhook_id:
            other_webhook.add(label)
        elif (
            seen.last_webhook_id in expected
            and seen.total_price is not None
            and _differing(_event_columns(seen), expected[seen.last_webhook_id])
        ):
            content.add(label)
    twice = [f"{o}@v{v}" for (o, v), seqs in sequences.items() if len(seqs) > 1]
    found = [
        Violation("I6", "events for webhooks that were discarded or failed (changed nothing)", sorted(for_discarded)),
        Violation("I6", "events for a version that was never committed", sorted(uncommitted)),
        Violation("I6", "events whose webhook is not the one committed at that version", sorted(other_webhook)),
        Violation("I6", "events whose content differs from their webhook's", sorted(content)),
        Violation("I6", "more than one event (distinct stream sequences) for one applied version", sorted(twice)),
    ]
    return [v for v in found if v.ids]


def reads_behind_events(reads: Sequence[ReadBack]) -> list[Violation]:
    behind = sorted(
        {
            f"{r.order_id}@v{r.event_version}"
            for r in reads
            if r.read_version is None or r.read_version < r.event_version
        }
    )
    return (
        [
            Violation(
                "I6", "the read API was older than an event already delivered (published before its commit)", behind
            )
        ]
        if behind
        else []
    )


def held_versions(log: Sequence[Seen]) -> tuple[dict[str, Seen], list[str]]:
    """Replay the sync protocol's client rules over one observer's log, across its reconnections: a
    ``reset`` (snapshot page 0) drops what was held; a snapshot entry sets the order; an event with
    ``version <= held`` is a duplicate, ``held + 1`` the next one, beyond that a gap. An order not held
    yet may start at any version after a snapshot, else at 1. Returns (held, gaps)."""
    held: dict[str, Seen] = {}
    gaps: list[str] = []
    after_snapshot = False
    for seen in log:
        if seen.kind == "reset":
            held, after_snapshot = {}, True
            continue
        have = held[seen.order_id].version if seen.order_id in held else None
        if seen.kind == "snapshot":
            held[seen.order_id] = seen
            continue
        if have is None:
            if not after_snapshot:
                gaps.extend(f"{seen.order_id}@v{v}" for v in range(1, seen.version))
            held[seen.order_id] = seen
        elif seen.version > have:
            gaps.extend(f"{seen.order_id}@v{v}" for v in range(have + 1, seen.version))
            held[seen.order_id] = seen
    return held, gaps


def observer_views(
    steady: Sequence[Seen],
    resumed: Sequence[Sequence[Seen]],
    rows: Mapping[str, OrderColumns],
    versions: Mapping[str, int],
) -> list[Violation]:
    """Each resumed observer's log against the stored rows (``rows``, ``versions``: order id -> columns,
    version; only these orders are judged) and against the steady observer's log."""
    known = {(s.order_id, s.version, s.last_webhook_id) for s in steady if s.kind != "reset"}
    gaps: set[str] = set()
    stale: set[str] = set()
    foreign: set[str] = set()
    for log in resumed:
        held, missing = held_versions(log)
        gaps.update(g for g in missing if g.rsplit("@", 1)[0] in rows)
        for order_id, columns in rows.items():
            last = held.get(order_id)
            if last is None or last.version != versions[order_id] or last.last_webhook_id != columns.last_webhook_id:
                stale.add(order_id)
        foreign.update(
            f"{s.order_id}@v{s.version}"
            for s in log
            if s.kind == "event" and s.order_id in rows and (s.order_id, s.version, s.last_webhook_id) not in known
        )
    found = [
        Violation("I6", "a resumed observer missed versions (gap after a resume)", sorted(gaps)),
        Violation("I6", "a resumed observer did not end with the stored version", sorted(stale)),
        Violation("I6", "a resumed observer got an event the steady observer never saw", sorted(foreign)),
    ]
    return [v for v in found if v.ids]


def page_walk(
    items: Sequence[PageItem],
    scope: Iterable[str],
    *,
    rows: Mapping[str, OrderColumns],
    versions: Mapping[str, int],
    committed: Mapping[tuple[str, int], str],
    quiescent: bool,
) -> list[Violation]:
    """One walk through ``GET /orders`` (items in the order listed) for the test's orders ``scope``.
    Always: no order twice and only committed states; ``quiescent`` (nothing changed during the walk):
    every stored order exactly as stored."""
    wanted = set(scope)
    listed = [i for i in items if i.order_id in wanted]
    counts = Counter(i.order_id for i in listed)
    found = [
        Violation(
            "I1", "GET /orders listed an order on more than one page", sorted(o for o, n in counts.items() if n > 1)
        )
    ]
    found.append(
        Violation(
            "I1",
            "GET /orders listed a state that was never committed",
            sorted(
                f"{i.order_id}@v{i.version}"
                for i in listed
                if committed.get((i.order_id, i.version)) != i.columns.last_webhook_id
            ),
        )
    )
    if quiescent:
        found.append(Violation("I1", "GET /orders skipped a stored order", sorted(wanted & set(rows) - set(counts))))
        found.append(
            Violation(
                "I1",
                "GET /orders differs from the stored row",
                sorted(
                    {
                        i.order_id
                        for i in listed
                        if i.order_id in rows
                        and (i.version != versions[i.order_id] or _differing(i.columns, rows[i.order_id]))
                    }
                ),
            )
        )
    return [v for v in found if v.ids]


def poison_outcomes(
    poison: Mapping[str, str],
    ledger: Sequence[LedgerEntry] | None,
    audit: Mapping[str, AuditEntry],
    winners: Iterable[str],
) -> list[Violation]:
    """``poison``: poison webhook id -> its kind; ``audit``: webhook id -> its audit row; ``winners``: the
    stored rows' last_webhook_id. A ``schema`` poison breaks the order contract that ingest checks: it must
    be answered 422 (README, the webhook contract). Any other (``calendarEdge``: valid by the contract,
    impossible to store) may also be accepted and then dead-lettered. Without a ledger a poison webhook with
    no audit row counts as rejected."""
    answers = {e.webhook_id: e.status for e in ledger or []}
    won = set(winners)
    applied, stuck, unanswered, stored_anyway, accepted = [], [], [], [], []
    for webhook_id, kind in poison.items():
        row = audit.get(webhook_id)
        status = answers.get(webhook_id)
        ok = status is not None and 200 <= status < 300
        if webhook_id in won or (row is not None and row.status != "failed"):
            applied.append(webhook_id)
        elif ledger is not None and not (ok or (status is not None and 400 <= status < 500)):
            unanswered.append(webhook_id)
        elif not ok and status is not None and row is not None:
            stored_anyway.append(webhook_id)
        elif ok and row is None:
            stuck.append(webhook_id)
        if ok and kind == "schema":
            accepted.append(webhook_id)
    found = [
        Violation(
            "I5", "poison webhooks applied (processed or discarded) instead of rejected or dead-lettered", applied
        ),
        Violation("I5", "poison webhooks answered 4xx but stored anyway", stored_anyway),
        Violation("I3", "poison webhooks accepted but never dead-lettered (stuck or silently dropped)", stuck),
        Violation("I7", "poison webhooks answered neither 4xx nor 2xx", unanswered),
        Violation(
            "I7", "poison webhooks that break the order contract answered 2xx (ingest must answer 422)", accepted
        ),
    ]
    return [v for v in found if v.ids]


class FaultWindow(BaseModel):
    """What one fault window did to the load (``grace_s`` after the heal counts too: answers in flight)."""

    name: str
    type: str
    failed: int  # attempts that got no answer or a 5xx/429 inside the window
    retried: int  # requests with such an attempt that were tried again
    answered: int  # requests finally answered (2xx or 4xx) inside the window
    request_path: bool  # a fault that requests pass through (the broker, ingest): it must fail some


def on_request_path(record: FaultRecord, selectors: Mapping[str, Mapping[str, str]]) -> bool:
    """Faults that webhooks pass through: a broker restart (ingest's publishes wait for it) and faults of
    ingest itself. Processor, database and Redis faults must not fail a request at all."""
    return record.type == "brokerRestart" or selectors.get(record.name, {}).get(COMPONENT_LABEL) == "ingest"


def fault_windows(
    records: Sequence[FaultRecord],
    ledger: Sequence[LedgerEntry],
    selectors: Mapping[str, Mapping[str, str]],
    grace_s: float = 2.0,
) -> list[FaultWindow]:
    """``selectors``: fault name -> its selector (what it hit)."""
    windows = []
    for record in records:
        if record.started_at is None or record.result == "skipped":
            continue
        start, end = record.started_at, (record.healed_at or record.started_at) + grace_s
        failed = retried = answered = 0
        for entry in ledger:
            failed += sum(1 for at, _ in entry.failures if start <= at <= end)
            # failure i is attempt i: it was retried unless it was the last attempt (given up)
            retried += any(start <= at <= end for at, _ in entry.failures[: entry.attempts - 1])
            final = 200 <= entry.status < 300 or (400 <= entry.status < 500 and entry.status != 429)
            answered += final and start <= entry.done_at <= end
        windows.append(
            FaultWindow(
                name=record.name,
                type=record.type,
                failed=failed,
                retried=retried,
                answered=answered,
                request_path=on_request_path(record, selectors),
            )
        )
    return windows


def idle_faults(windows: Sequence[FaultWindow]) -> list[str]:
    """Faults on the request path that failed no request: the run did not test what they model."""
    return [w.name for w in windows if w.request_path and w.failed == 0]


@dataclass
class Extras:
    """What run/verify gather for these checks beyond the verifier's Context (``Context.extras``)."""

    store: StoreView
    resumed: Sequence[Sequence[Seen]] = ()
    reads: Sequence[ReadBack] = ()
    walks_during: Sequence[Sequence[PageItem]] = ()
    walk_after: Sequence[PageItem] | None = None
    selectors: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # fault name -> its selector


# ---------------------------------------------------------------- registered with the verifier


def _findings(violations: Iterable[Violation], invariant: str | None = None) -> Iterator[Finding]:
    for v in _merged(violations):
        if invariant is None or v.invariant == invariant:
            yield from found(v.invariant, v.message, v.ids)


@check("I2", "every column the winning webhook determines is stored as the webhook (and the domain rules) say")
def winner_columns(ctx: Context) -> Iterator[Finding]:
    if ctx.extras is not None:
        winners = {order_id: expected_columns(w) for order_id, w in ctx.newest.items()}
        yield from _findings(stored_columns(winners, ctx.extras.store.rows))


@check("I6", "the events are the committed history, never ahead of the store; resumed observers converge")
def event_history(ctx: Context) -> Iterator[Finding]:
    if ctx.extras is None:
        return
    store = ctx.extras.store
    violations = reads_behind_events(ctx.extras.reads)
    if ctx.observed is not None:
        expected = {webhook_id: expected_columns(w) for webhook_id, w in ctx.valid.items()}
        violations += events_vs_history(ctx.observed, store.audit, expected)
        violations += observer_views(ctx.observed, ctx.extras.resumed, store.rows, store.versions)
    yield from _findings(violations)


@check("I1", "GET /orders paged end to end lists every order once, as stored")
def read_api_pages(ctx: Context) -> Iterator[Finding]:
    if ctx.extras is None:
        return
    extras, store = ctx.extras, ctx.extras.store
    committed = {
        (a.order_id, a.version): a.webhook_id for a in store.audit if a.status == "processed" and a.version is not None
    }
    scope = {r.webhook.order_id for r in ctx.requests}
    walks = [(walk, False) for walk in extras.walks_during]
    walks += [(extras.walk_after, True)] if extras.walk_after is not None else []
    yield from _findings(
        v
        for walk, quiescent in walks
        for v in page_walk(
            walk, scope, rows=store.rows, versions=store.versions, committed=committed, quiescent=quiescent
        )
    )


def _poison(ctx: Context, invariant: str) -> Iterator[Finding]:
    if ctx.extras is None or not ctx.poison:
        return
    store = ctx.extras.store
    kinds = {webhook_id: poison_kind(webhook_id) for webhook_id in ctx.poison}
    audit = {a.webhook_id: a for a in store.audit}
    winners = (c.last_webhook_id or "" for c in store.rows.values())
    yield from _findings(poison_outcomes(kinds, ctx.ledger, audit, winners), invariant)


@check("I3", "poison that was accepted is dead-lettered (a failed audit row)")
def poison_dead_lettered(ctx: Context) -> Iterator[Finding]:
    yield from _poison(ctx, "I3")


@check("I5", "poison is never applied")
def poison_never_applied(ctx: Context) -> Iterator[Finding]:
    yield from _poison(ctx, "I5")


@check("I7", "poison is answered 4xx (422 when it breaks the order contract) or accepted and dead-lettered")
def poison_answered(ctx: Context) -> Iterator[Finding]:
    yield from _poison(ctx, "I7")


@check("coverage", "every fault overlapped webhooks in flight")
def request_path_faults(ctx: Context) -> Iterator[Finding]:
    if ctx.extras is None or ctx.ledger is None:
        return
    for name in idle_faults(fault_windows(ctx.faults, ctx.ledger, ctx.extras.selectors)):
        yield Finding(
            "coverage", f"fault {name} is on the request path but failed no request", (name,), inconclusive=True
        )


def _merged(found: Iterable[Violation]) -> list[Violation]:
    """One violation per (invariant, message): repeated walks report the same kind of damage."""
    merged: dict[tuple[str, str], dict[str, None]] = {}
    for v in found:
        merged.setdefault((v.invariant, v.message), {}).update(dict.fromkeys(v.ids))
    return [Violation(invariant, message, list(ids)) for (invariant, message), ids in merged.items()]
