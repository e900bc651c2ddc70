"""The verifier: checks a run's history (what was sent, what the runners were answered, what the store
holds, what clients saw, when faults were active) against the invariants I1-I7 of docs/architecture.md,
plus catch-up and fault coverage.

Every check is a pure function of a ``Context`` (the data gathered) returning ``Finding``s, registered
with ``@check(name, title)`` in ``CHECKS``; ``verify`` runs them and derives the verdict: Fail when a
finding is a violation, else Inconclusive when one says the run proved less than it claims (an
invariant that could not be checked, a fault that hit nothing, no catch-up), else Pass. A module that
adds a check imports ``check`` and ``Finding`` and decorates its function; ``verify`` runs it then.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING

import asyncpg
from fincart_core.contracts.report import Anomaly, Counts, FaultRecord, Verdict
from fincart_core.settings import to_asyncpg_url

from fincart_chaos import oracle
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.observer import Seen
from fincart_chaos.outcomes import WebhookOutcome, classify, in_flight, tally, window
from fincart_chaos.workload import Request, Webhook

if TYPE_CHECKING:
    from fincart_chaos.history_checks import Extras

ALL_INVARIANTS = tuple(f"I{i}" for i in range(1, 8))
SAMPLES = 10
REQUIRED_COLUMNS = (
    "status",
    "shipping_fee",
    "version",
    "last_external_updated_at",
    "last_webhook_id",
    "created_at",
    "updated_at",
)
# answers a Shopify-like sender may see on its way to a 2xx (outages it retries through)
TRANSIENT_STATUSES = {0, 429, 502, 503, 504}
DB_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    status: str | None
    shipping_fee: Decimal | None
    version: int | None
    last_webhook_id: str | None
    null_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditRow:
    webhook_id: str
    order_id: str
    status: str


@dataclass
class History:
    """What the database holds for the test's orders."""

    orders: list[OrderRow]
    audit: list[AuditRow]


@dataclass(frozen=True)
class Finding:
    """One thing a check found: a violation of ``check`` (Fail), or, ``inconclusive``, a reason the run
    proves less than it claims. ``ids``: every webhook id, order id or ``order@vN`` concerned."""

    check: str
    message: str
    ids: tuple[str, ...] = ()
    count: int | None = None
    inconclusive: bool = False

    def anomaly(self) -> Anomaly:
        return Anomaly(
            invariant=self.check,
            message=self.message,
            count=max(self.count or 0, len(self.ids)),
            samples=sorted(set(self.ids))[:SAMPLES],
        )


def found(check_name: str, message: str, ids: Iterable[str], count: int | None = None) -> Iterator[Finding]:
    """A violation, if any id is concerned."""
    ids = tuple(ids)
    if ids or count:
        yield Finding(check_name, message, ids, count)


@dataclass
class Context:
    """The data the verifier gathered. ``ledger`` None: no runner ledgers (their exit codes say every
    valid webhook was acked); ``observed`` None: no client observed the events (``unobserved`` says why);
    ``caught_up`` False: the catch-up deadline passed first."""

    requests: Sequence[Request]
    ledger: Sequence[LedgerEntry] | None
    history: History
    observed: Sequence[Seen] | None
    faults: Sequence[FaultRecord] = ()
    max_lost: int = 0
    caught_up: bool = True
    deadline: str = ""
    unobserved: str = "no sync service to observe"
    extras: Extras | None = None  # what the history checks read besides (rows in full, read API, resumes)

    @cached_property
    def valid(self) -> dict[str, Webhook]:
        return {r.webhook.webhook_id: r.webhook for r in self.requests if r.valid}

    @cached_property
    def webhooks(self) -> dict[str, Webhook]:
        """Every webhook sent, forged ones included."""
        return {r.webhook.webhook_id: r.webhook for r in self.requests}

    @cached_property
    def poison(self) -> set[str]:
        """Poison webhooks (signed, an invalid order): a failed audit row is their expected end."""
        return {r.webhook.webhook_id for r in self.requests if r.kind == "poison"}

    @cached_property
    def audit_by_id(self) -> dict[str, AuditRow]:
        return {a.webhook_id: a for a in self.history.audit}

    @cached_property
    def outcomes(self) -> list[WebhookOutcome]:
        # a dead-lettered (failed) webhook was not applied
        return classify(self.ledger or [], {a.webhook_id for a in self.history.audit if a.status != "failed"})

    @cached_property
    def outcome_counts(self) -> dict[str, int]:
        """Webhooks per outcome class; empty without ledgers (no answers, no classes)."""
        return tally(self.outcomes) if self.ledger is not None else {}

    @cached_property
    def acked(self) -> set[str]:
        if self.ledger is None:
            return set(self.valid)
        return {o.webhook_id for o in self.outcomes if o.valid and o.answer == "ok"}

    @cached_property
    def applied(self) -> set[str]:
        """Webhooks that may be applied: the acked ones and any other valid one the audit log holds."""
        return self.acked | (set(self.valid) & set(self.audit_by_id))

    @cached_property
    def rows(self) -> dict[str, list[OrderRow]]:
        rows = defaultdict(list)
        for row in self.history.orders:
            rows[row.order_id].append(row)
        return rows

    @cached_property
    def processed(self) -> Counter[str]:
        return Counter(a.order_id for a in self.history.audit if a.status == "processed")

    @cached_property
    def lost(self) -> list[str]:
        return sorted(self.acked - set(self.audit_by_id))

    @cached_property
    def unexpected(self) -> list[str]:
        return sorted(
            a.webhook_id
            for a in self.history.audit
            if a.webhook_id not in self.valid and not (a.webhook_id in self.poison and a.status == "failed")
        )

    @cached_property
    def newest(self) -> dict[str, Webhook]:
        """Per order, the applied webhook with the greatest (updated_at, id): the final state I2 expects."""
        newest: dict[str, Webhook] = {}
        for webhook_id in self.applied:
            w = self.valid[webhook_id]
            if w.order_id not in newest or w.sort_key > newest[w.order_id].sort_key:
                newest[w.order_id] = w
        return newest

    @cached_property
    def stale(self) -> list[str]:
        """Orders whose row holds an older applied webhook than the newest (a stale overwrite)."""
        stale = []
        for order_id, newest in self.newest.items():
            for row in self.rows[order_id][:1]:
                held = self.valid.get(row.last_webhook_id or "")
                if held and held.sort_key < newest.sort_key:
                    stale.append(order_id)
        return stale

    @cached_property
    def applied_twice(self) -> tuple[list[str], int]:
        """Sample ids (webhook ids seen twice, else orders with excess versions) and how many."""
        excess = {
            r.order_id: (r.version or 0) - self.processed[r.order_id]
            for r in self.history.orders
            if (r.version or 0) > self.processed[r.order_id]
        }
        twice = _applied_twice(self.observed or [])
        return (twice or list(excess)), max(sum(excess.values()), len(twice))

    def order_of(self, sample: str) -> str | None:
        """The order a finding's id is about: a webhook id, an ``order@vN`` or an order id."""
        if sample in self.webhooks:
            return self.webhooks[sample].order_id
        if sample in self.audit_by_id:
            return self.audit_by_id[sample].order_id
        order = sample.rsplit("@v", 1)[0]
        return order if order in self.rows or any(w.order_id == order for w in self.valid.values()) else None


@dataclass(frozen=True)
class Check:
    name: str  # an invariant (I1..I7: run when the spec enables it) or another check's name (always run)
    title: str
    run: Callable[[Context], Iterable[Finding]]


CHECKS: list[Check] = []


def check(
    name: str, title: str
) -> Callable[[Callable[[Context], Iterable[Finding]]], Callable[[Context], Iterable[Finding]]]:
    """Register a check; ``verify`` runs every registered one."""

    def register(run: Callable[[Context], Iterable[Finding]]) -> Callable[[Context], Iterable[Finding]]:
        CHECKS.append(Check(name, title, run))
        return run

    return register


# ---------------------------------------------------------------- the invariants


@check("I1", "one complete row per order that got a webhook")
def rows_complete(ctx: Context) -> Iterator[Finding]:
    expected = {ctx.valid[w].order_id for w in ctx.applied}
    yield from found("I1", "orders without exactly one row", [o for o in expected if len(ctx.rows[o]) != 1])
    yield from found("I1", "orders with NULL columns", [r.order_id for r in ctx.history.orders if r.null_columns])


@check("I2", "final state = the newest applied webhook, status and fee by the domain rules")
def final_state(ctx: Context) -> Iterator[Finding]:
    wrong, misjudged = [], []
    for order_id, newest in ctx.newest.items():
        for row in ctx.rows[order_id][:1]:
            if row.last_webhook_id != newest.webhook_id:
                wrong.append(order_id)
            elif (row.status, row.shipping_fee) != oracle.expected(newest.payload):
                misjudged.append(order_id)
    yield from found("I2", "final state is not the newest webhook's (updated_at, id)", wrong)
    yield from found("I2", "final status or shipping fee differs from the domain rules (README)", misjudged)


@check("I3", "one audit row per webhook, none failed, each under its own order")
def audit_rows(ctx: Context) -> Iterator[Finding]:
    yield from found(
        "I3",
        "audit rows with status failed (other than a poison webhook's)",
        [a.webhook_id for a in ctx.history.audit if a.status == "failed" and a.webhook_id not in ctx.poison],
    )
    yield from found(
        "I3",
        "audit rows filed under another order",
        [
            a.webhook_id
            for a in ctx.history.audit
            if a.webhook_id in ctx.valid and ctx.valid[a.webhook_id].order_id != a.order_id
        ],
    )


@check("I4", "version = number of processed webhooks")
def versions(ctx: Context) -> Iterator[Finding]:
    yield from found(
        "I4",
        "version differs from the count of processed webhooks",
        [r.order_id for r in ctx.history.orders if r.version != ctx.processed[r.order_id]],
    )


@check("I5", "nothing acknowledged lost, nothing unexpected stored, nothing applied twice")
def durability(ctx: Context) -> Iterator[Finding]:
    if len(ctx.lost) > ctx.max_lost:
        yield from found("I5", f"acked webhooks never stored (tolerated: {ctx.max_lost})", ctx.lost)
    yield from found("I5", "stored webhooks that were never sent with a valid signature", ctx.unexpected)
    twice, count = ctx.applied_twice
    yield from found("I5", "webhooks applied more than once (samples: webhook ids, else orders)", twice, count)


@check("I6", "every applied version reached a client, in order, with the stored content")
def delivery(ctx: Context) -> Iterator[Finding]:
    if ctx.observed is None:
        yield Finding("I6", f"not checked: {ctx.unobserved}", inconclusive=True)
        return
    missing, mismatched = _delivery_gaps(ctx.observed, ctx.history.orders)
    yield from found("I6", "applied versions a client never received (gap)", missing)
    yield from found("I6", "the newest version a client received differs from the stored row", mismatched)


@check("I7", "valid webhooks answered 2xx (through documented transient answers), forged ones 401")
def answers(ctx: Context) -> Iterator[Finding]:
    if ctx.ledger is None:
        yield Finding("I7", "not checked: no runner ledger (only the runners' exit codes)", inconclusive=True)
        return
    ledger = ctx.ledger
    yield from found(
        "I7", "valid webhooks never answered 2xx", [e.webhook_id for e in ledger if e.valid and not e.acked]
    )
    yield from found(
        "I7",
        "valid webhooks answered with an undocumented error",
        [
            e.webhook_id
            for e in ledger
            if e.valid and e.first_status not in TRANSIENT_STATUSES and not 200 <= e.first_status < 300
        ],
    )
    yield from found(
        "I7",
        "forged signatures not answered 401",
        [e.webhook_id for e in ledger if e.kind == "invalid_signature" and e.status != 401],
    )


# ---------------------------------------------------------------- what makes a verdict worth having


@check("catch-up", "after the last fault was healed, the store and the clients caught up before the deadline")
def catch_up(ctx: Context) -> Iterator[Finding]:
    if not ctx.caught_up:
        yield Finding(
            "catch-up",
            f"the pipeline had not caught up when the deadline ({ctx.deadline}) passed: "
            "acknowledged webhooks not yet stored or versions not yet observed",
            inconclusive=True,
        )


@check("coverage", "every fault overlapped webhooks in flight")
def coverage(ctx: Context) -> Iterator[Finding]:
    for record in ctx.faults:
        span = window(record)
        if span is None:
            yield Finding(
                "coverage",
                f"fault {record.name} ({record.type}) {record.result}: {record.message or 'it never acted'}",
                (record.name,),
                inconclusive=True,
            )
        elif ctx.ledger is None:
            yield Finding(
                "coverage",
                f"fault {record.name}: no runner ledger, so what it hit is unknown",
                (record.name,),
                inconclusive=True,
            )
        elif not in_flight(ctx.ledger, *span):
            yield Finding(
                "coverage",
                f"fault {record.name} ({record.type}) hit no webhook in flight",
                (record.name,),
                inconclusive=True,
            )


@check("acked", "at least one webhook was acknowledged")
def something_acked(ctx: Context) -> Iterator[Finding]:
    if not ctx.acked:
        yield Finding("acked", "no webhook was acknowledged", inconclusive=True)


# ---------------------------------------------------------------- the verdict


@dataclass
class Result:
    verdict: Verdict
    reason: str | None
    counts: Counts
    anomalies: list[Anomaly]
    checked: list[str]
    notes: list[str] = field(default_factory=list)
    inconclusive: list[Anomaly] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    lost_positions: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def verify(ctx: Context, invariants: set[str]) -> Result:
    """Run every registered check the spec enables and judge."""
    findings = [f for c in CHECKS if c.name in invariants or c.name not in ALL_INVARIANTS for f in c.run(ctx)]
    violations = [f.anomaly() for f in findings if not f.inconclusive]
    gaps = [f.anomaly() for f in findings if f.inconclusive]
    unchecked = {f.check for f in findings if f.inconclusive}
    checked = [i for i in ALL_INVARIANTS if i in invariants and i not in unchecked]
    notes = (
        [f"{len(ctx.lost)} lost webhooks within maxLost={ctx.max_lost}"] if 0 < len(ctx.lost) <= ctx.max_lost else []
    )
    notes += [f"{g.invariant}: {g.message}" for g in gaps]
    if violations:
        verdict: Verdict = "Fail"
        reason: str | None = f"violated {', '.join(sorted({a.invariant for a in violations}))}"
    elif gaps:
        verdict, reason = "Inconclusive", "; ".join(f"{g.invariant}: {g.message}" for g in gaps)[:1000]
    else:
        verdict, reason = "Pass", None
    positions = Counter(str(o.position) for o in ctx.outcomes if o.position)
    return Result(
        verdict, reason, counts(ctx), violations, checked, notes, gaps, ctx.outcome_counts, dict(positions), findings
    )


def counts(ctx: Context) -> Counts:
    ledger = ctx.ledger
    orders = {w.order_id for w in ctx.valid.values()}
    outcomes = ctx.outcome_counts
    return Counts(
        sent=len(ledger) if ledger is not None else len(ctx.requests),
        acked=sum(e.acked for e in ledger) if ledger is not None else sum(r.valid for r in ctx.requests),
        rejected=sum(1 for e in ledger if not e.valid and 400 <= e.status < 500) if ledger is not None else 0,
        stored=len([a for a in ctx.history.audit if a.order_id in orders]),
        lost=len(ctx.lost),
        duplicated=ctx.applied_twice[1],
        unexpected=len(ctx.unexpected),
        stale_overwrites=len(ctx.stale),
        unknown=outcomes.get("unknown", 0),
        recovered=outcomes.get("recovered", 0),
    )


def _applied_twice(observed: Sequence[Seen]) -> list[str]:
    """Webhook ids that became the newest state at two different versions of one order."""
    versions: dict[tuple[str, str], set[int]] = defaultdict(set)
    for seen in observed:
        versions[(seen.order_id, seen.last_webhook_id)].add(seen.version)
    return [webhook_id for (_, webhook_id), vs in versions.items() if len(vs) > 1]


def _delivery_gaps(observed: Sequence[Seen], rows: Sequence[OrderRow]) -> tuple[list[str], list[str]]:
    """Per order, replay the client rules of the sync protocol: ``version <= held`` is a duplicate,
    ``held + 1`` the next one, anything beyond is a gap; in the end the client must hold the stored row."""
    held: dict[str, Seen] = {}
    missing: list[str] = []
    for seen in observed:
        have = held[seen.order_id].version if seen.order_id in held else 0
        if seen.version <= have:
            continue
        missing.extend(f"{seen.order_id}@v{v}" for v in range(have + 1, seen.version))
        held[seen.order_id] = seen
    mismatched = []
    for row in rows:
        last = held.get(row.order_id)
        have = last.version if last else 0
        missing.extend(f"{row.order_id}@v{v}" for v in range(have + 1, (row.version or 0) + 1))
        if last and _differs(last, row):
            mismatched.append(row.order_id)
    return missing, mismatched


def _differs(seen: Seen, row: OrderRow) -> bool:
    if seen.version != row.version:
        return seen.version > (row.version or 0)  # a client saw a version that was never stored
    return (seen.status, Decimal(seen.shipping_fee), seen.last_webhook_id) != (
        row.status,
        row.shipping_fee,
        row.last_webhook_id,
    )


async def read_history(database_url: str, order_ids: Sequence[str]) -> History:
    conn = await asyncpg.connect(to_asyncpg_url(database_url), timeout=DB_TIMEOUT_S)
    try:
        orders = await conn.fetch(
            "SELECT * FROM orders WHERE shopify_order_id = ANY($1::text[])", list(order_ids), timeout=DB_TIMEOUT_S
        )
        audit = await conn.fetch(
            "SELECT webhook_id, shopify_order_id, status FROM audit_log WHERE shopify_order_id = ANY($1::text[])",
            list(order_ids),
            timeout=DB_TIMEOUT_S,
        )
    finally:
        await conn.close()
    return History(
        orders=[
            OrderRow(
                r["shopify_order_id"],
                r["status"],
                r["shipping_fee"],
                r["version"],
                r["last_webhook_id"],
                tuple(c for c in REQUIRED_COLUMNS if r[c] is None),
            )
            for r in orders
        ],
        audit=[AuditRow(a["webhook_id"], a["shopify_order_id"], a["status"]) for a in audit],
    )


async def settle(
    database_url: str,
    order_ids: Sequence[str],
    stored: int,
    timeout: float,
    observed: Sequence[Seen] | None = None,
    poll_s: float = 0.2,
) -> bool:
    """Wait until the audit log holds ``stored`` rows for the orders and, with an observer, until it
    has seen every stored version; False when ``timeout`` ran out first (the checks then say what is
    missing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    conn = await asyncpg.connect(to_asyncpg_url(database_url), timeout=DB_TIMEOUT_S)
    try:
        while True:
            audit, versions = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM audit_log WHERE shopify_order_id = ANY($1::text[])),"
                " (SELECT coalesce(sum(version), 0) FROM orders WHERE shopify_order_id = ANY($1::text[]))",
                list(order_ids),
                timeout=DB_TIMEOUT_S,
            )
            seen = _newest_versions(observed) if observed is not None else versions
            if audit >= stored and seen >= versions:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(poll_s)
    finally:
        await conn.close()


def _newest_versions(observed: Sequence[Seen]) -> int:
    newest: dict[str, int] = {}
    for seen in observed:
        newest[seen.order_id] = max(newest.get(seen.order_id, 0), seen.version)
    return sum(newest.values())
