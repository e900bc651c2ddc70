"""The verifier: rebuilds what was sent from the spec, reads PostgreSQL and the observer log, and
checks the invariants I1-I7 of ARCHITECTURE.md over the whole history.

``check`` is pure (history in, verdict out), so it is tested against deliberately broken histories.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
from fincart_core.contracts.report import Anomaly, Counts, Verdict
from fincart_core.settings import to_asyncpg_url

from fincart_chaos.history_checks import Violation
from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.observer import Seen
from fincart_chaos.workload import Request, Webhook

ALL_INVARIANTS = tuple(f"I{i}" for i in range(1, 8))
SAMPLES = 10
REQUIRED_COLUMNS = ("status", "shipping_fee", "version", "last_external_updated_at", "last_webhook_id",
                    "created_at", "updated_at")
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


@dataclass
class Result:
    verdict: Verdict
    reason: str | None
    counts: Counts
    anomalies: list[Anomaly]
    checked: list[str]
    notes: list[str] = field(default_factory=list)


class Findings:
    def __init__(self, enabled: set[str]) -> None:
        self.enabled = enabled
        self.anomalies: list[Anomaly] = []

    def add(self, invariant: str, message: str, ids: Iterable[str], count: int | None = None) -> None:
        ids = list(ids)
        if ids and invariant in self.enabled:
            self.anomalies.append(Anomaly(invariant=invariant, message=message, count=max(count or 0, len(ids)),
                                          samples=sorted(set(ids))[:SAMPLES]))


def _newest(webhooks: Iterable[Webhook]) -> Webhook | None:
    return max(webhooks, key=lambda w: w.sort_key, default=None)


def check(requests: Sequence[Request], ledger: Sequence[LedgerEntry] | None, history: History,
          observed: Sequence[Seen] | None, *, invariants: set[str], max_lost: int = 0,
          more: Sequence[Violation] = ()) -> Result:
    """Check the history against what was sent. ``ledger`` None: every valid webhook counts as acked
    (the load Job succeeded); ``observed`` None: I6 is not checked (no sync service); ``more``: what the
    history checks (fincart_chaos.history_checks) found."""
    valid = {r.webhook.webhook_id: r.webhook for r in requests if r.valid}
    orders = {w.order_id for w in valid.values()}
    acked = set(valid) if ledger is None else {e.webhook_id for e in ledger if e.acked}
    audit_by_id = {a.webhook_id: a for a in history.audit}
    applied = acked | (set(valid) & set(audit_by_id))  # an unanswered webhook may still have been stored
    rows = defaultdict(list)
    for row in history.orders:
        rows[row.order_id].append(row)
    found = Findings(invariants)
    checked = [i for i in ALL_INVARIANTS if i in invariants]
    notes = []

    # I1: one complete row per order that got a webhook
    expected_orders = {valid[w].order_id for w in applied}
    found.add("I1", "orders without exactly one row", [o for o in expected_orders if len(rows[o]) != 1])
    found.add("I1", "orders with NULL columns", [r.order_id for r in history.orders if r.null_columns])

    # I2: final state = the applied webhook with the greatest (updated_at, id)
    by_order = defaultdict(list)
    for webhook_id in applied:
        by_order[valid[webhook_id].order_id].append(valid[webhook_id])
    wrong, stale = [], []
    for order_id, webhooks in by_order.items():
        newest = _newest(webhooks)
        for row in rows[order_id][:1]:
            if newest and (row.last_webhook_id, row.status, row.shipping_fee) != (
                    newest.webhook_id, newest.status, newest.shipping_fee):
                wrong.append(order_id)
                held = valid.get(row.last_webhook_id or "")
                if held and held.sort_key < newest.sort_key:
                    stale.append(order_id)
    found.add("I2", "final state is not the newest webhook's (updated_at, id)", wrong)

    # I3: one audit row per acked webhook, none failed (but poison's), each filed under its own order
    poison = {r.webhook.webhook_id for r in requests if r.kind == "poison"}
    found.add("I3", "audit rows with status failed",
              [a.webhook_id for a in history.audit if a.status == "failed" and a.webhook_id not in poison])
    misfiled = [a.webhook_id for a in history.audit
                if a.webhook_id in valid and valid[a.webhook_id].order_id != a.order_id]
    found.add("I3", "audit rows filed under another order", misfiled)

    # I4: version = number of processed webhooks
    processed = Counter(a.order_id for a in history.audit if a.status == "processed")
    bad_version = [r.order_id for r in history.orders if r.version != processed[r.order_id]]
    found.add("I4", "version differs from the count of processed webhooks", bad_version)

    # I5: nothing acked lost, nothing stored that was never sent, nothing applied twice
    lost = sorted(acked - set(audit_by_id))
    unexpected = sorted(a.webhook_id for a in history.audit if a.webhook_id not in valid and a.webhook_id not in poison)
    excess = {r.order_id: (r.version or 0) - processed[r.order_id] for r in history.orders
              if (r.version or 0) > processed[r.order_id]}
    twice = _applied_twice(observed or [])
    duplicated = max(sum(excess.values()), len(twice))
    if len(lost) > max_lost:
        found.add("I5", f"acked webhooks never stored (tolerated: {max_lost})", lost)
    elif lost:
        notes.append(f"{len(lost)} lost webhooks within maxLost={max_lost}")
    found.add("I5", "stored webhooks that were never sent with a valid signature", unexpected)
    found.add("I5", "webhooks applied more than once (samples: webhook ids, else orders)", twice or excess,
              duplicated)

    # I6: every applied version reached a client, in order, no gaps, with the stored content
    if observed is None:
        checked = [i for i in checked if i != "I6"]
        notes.append("I6 not checked: no sync service to observe")
    else:
        missing, mismatched = _delivery_gaps(observed, history.orders)
        found.add("I6", "applied versions a client never received (gap)", missing)
        found.add("I6", "the newest version a client received differs from the stored row", mismatched)

    # I7: valid webhooks answered 2xx (through documented transient answers), forged ones 401
    if ledger is None:
        checked = [i for i in checked if i != "I7"]
        notes.append("I7 not checked: no load ledger (the load runners' exit codes stand for it)")
    else:
        found.add("I7", "valid webhooks never answered 2xx", [e.webhook_id for e in ledger if e.valid and not e.acked])
        found.add("I7", "valid webhooks answered with an undocumented error",
                  [e.webhook_id for e in ledger if e.valid and e.first_status not in TRANSIENT_STATUSES
                   and not 200 <= e.first_status < 300])
        found.add("I7", "forged signatures not answered 401",
                  [e.webhook_id for e in ledger if e.kind == "invalid_signature" and e.status != 401])
    for violation in more:
        found.add(violation.invariant, violation.message, violation.ids)

    counts = Counts(
        sent=len(ledger) if ledger is not None else len(requests),
        acked=sum(e.acked for e in ledger) if ledger is not None else len([r for r in requests if r.valid]),
        rejected=sum(1 for e in ledger if not e.valid and 400 <= e.status < 500) if ledger is not None else 0,
        stored=len([a for a in history.audit if a.order_id in orders]),
        lost=len(lost), duplicated=duplicated, unexpected=len(unexpected),
        stale_overwrites=len(stale),
    )
    if found.anomalies:
        names = sorted({a.invariant for a in found.anomalies})
        return Result("Fail", f"violated {', '.join(names)}", counts, found.anomalies, checked, notes)
    if not acked:
        return Result("Inconclusive", "no webhook was acknowledged", counts, [], checked, notes)
    return Result("Pass", None, counts, [], checked, notes)


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
        row.status, row.shipping_fee, row.last_webhook_id)


async def read_history(database_url: str, order_ids: Sequence[str]) -> History:
    conn = await asyncpg.connect(to_asyncpg_url(database_url), timeout=DB_TIMEOUT_S)
    try:
        orders = await conn.fetch("SELECT * FROM orders WHERE shopify_order_id = ANY($1::text[])",
                                  list(order_ids), timeout=DB_TIMEOUT_S)
        audit = await conn.fetch("SELECT webhook_id, shopify_order_id, status FROM audit_log "
                                 "WHERE shopify_order_id = ANY($1::text[])", list(order_ids), timeout=DB_TIMEOUT_S)
    finally:
        await conn.close()
    return History(
        orders=[OrderRow(r["shopify_order_id"], r["status"], r["shipping_fee"], r["version"], r["last_webhook_id"],
                         tuple(c for c in REQUIRED_COLUMNS if r[c] is None)) for r in orders],
        audit=[AuditRow(a["webhook_id"], a["shopify_order_id"], a["status"]) for a in audit],
    )


async def settle(database_url: str, order_ids: Sequence[str], stored: int, timeout: float,
                 observed: Sequence[Seen] | None = None, poll_s: float = 0.2) -> bool:
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
                list(order_ids), timeout=DB_TIMEOUT_S)
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
