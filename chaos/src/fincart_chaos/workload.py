"""The workload: a pure function of (load spec, runner index, run id).

Reruns send the very same webhooks, and the verifier rebuilds what every runner sent from the spec
alone. Update ``i`` of an order has ``updated_at = BASE + i s`` unless it is tied (``tieRatio``): then it
shares its predecessor's ``updated_at`` and the webhook id decides, so tied webhooks get ids with a random
key (in no relation to their send or index order). Each order cycles through every financial x fulfillment
status pair and every total around the fee tier boundaries, in a seeded order. The send order is ascending
except for a shuffled ``outOfOrderRatio`` share, ``duplicateRatio`` of the webhooks are sent a second time
later on, ``invalidSignatureRatio`` adds requests with a wrong HMAC and ``poisonRatio`` signed requests
whose order is invalid; the update of each would win if it were ever stored.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from fincart_core.contracts.chaostest import Load, PoisonKind
from fincart_core.domain import order_status, shipping_fee

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
SEED_ORDER = "order_chaos_test_12345"
FINANCIAL = (None, "pending", "authorized", "paid", "partially_paid", "partially_refunded", "refunded", "voided")
FULFILLMENT = (None, "fulfilled", "partial", "restocked")
STATUS_PAIRS = tuple(itertools.product(FINANCIAL, FULFILLMENT))
# both sides of every shipping fee tier boundary (50, 100, 200), and the ends
TOTALS = ("0.00", "19.90", "49.99", "50.00", "75.00", "99.99", "100.00", "150.00", "199.99", "200.00", "350.00")
# an invalid-signature or poison update lies far in the future: stored by mistake, it would become the final state
FORGED_OFFSET = timedelta(days=3650)


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda payload: payload.__setitem__(key, value)


def _drop(key: str) -> Callable[[dict[str, object]], None]:
    def drop(payload: dict[str, object]) -> None:
        payload.pop(key)

    return drop


# name -> (kind, how a valid payload is spoilt). Every one is valid JSON that the order contract refuses or
# that no PostgreSQL/Python timestamp round trip survives: ingest must answer 422, or the processor dead-letter it.
POISON: dict[str, tuple[PoisonKind, Callable[[dict[str, object]], None]]] = {
    "missing-id": ("schema", _drop("id")),
    "empty-id": ("schema", _set("id", "")),
    "id-too-long": ("schema", _set("id", "x" * 256)),
    "missing-updated-at": ("schema", _drop("updated_at")),
    "impossible-date": ("schema", _set("updated_at", "2026-02-30T25:00:00Z")),
    "negative-total": ("schema", _set("total_price", "-0.01")),
    "absurd-total": ("schema", _set("total_price", "1e400")),
    "sub-cent-total": ("schema", _set("total_price", "49.999")),
    "status-not-a-string": ("schema", _set("financial_status", 7)),
    "negative-shipping": ("schema", _set("shipping_lines", [{"price": "-5.00", "title": "Standard"}])),
    # aware timestamps whose UTC instant is year 0 or year 10000: Python cannot hold them
    "year-1-east-of-utc": ("calendarEdge", _set("updated_at", "0001-01-01T00:00:00+01:00")),
    "year-9999-west-of-utc": ("calendarEdge", _set("updated_at", "9999-12-31T23:30:00-01:00")),
}

RequestKind = Literal["valid", "duplicate", "invalid_signature", "poison"]


@dataclass(frozen=True)
class Webhook:
    webhook_id: str
    order_id: str
    index: int
    updated_at: datetime
    payload: dict[str, object] = field(hash=False, compare=False)

    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode()

    @property
    def sort_key(self) -> tuple[datetime, str]:
        """The order in which webhooks supersede each other: (updated_at, webhook id)."""
        return (self.updated_at, self.webhook_id)

    @property
    def status(self) -> str:
        return order_status(self.payload.get("financial_status"), self.payload.get("fulfillment_status"))  # type: ignore[arg-type]

    @property
    def total_price(self) -> Decimal:
        return Decimal(str(self.payload["total_price"]))

    @property
    def shipping_fee(self) -> Decimal:
        return shipping_fee(self.total_price)


@dataclass(frozen=True)
class Request:
    webhook: Webhook
    kind: RequestKind

    @property
    def valid(self) -> bool:
        """A valid webhook (sent once or twice): it must be acknowledged and applied."""
        return self.kind in ("valid", "duplicate")

    @property
    def signed(self) -> bool:
        return self.kind != "invalid_signature"


def order_ids(load: Load, run_id: str = "") -> list[str]:
    """The seed scenario's order id for one order, else ``order_chaos_<seed>_<n>``; a run id makes them
    unique when several runs share a database (in the cluster)."""
    bases = [SEED_ORDER] if load.orders == 1 else [f"order_chaos_{load.seed}_{n}" for n in range(load.orders)]
    return [f"{base}-{run_id}" if run_id else base for base in bases]


@functools.lru_cache(maxsize=4096)
def _cycles(seed: int, order_id: str) -> tuple[tuple[tuple[str | None, str | None], ...], tuple[str, ...]]:
    """The order in which one order goes through the status pairs and the totals."""
    rng = random.Random(f"{seed}:{order_id}:cycles")
    return tuple(rng.sample(STATUS_PAIRS, len(STATUS_PAIRS))), tuple(rng.sample(TOTALS, len(TOTALS)))


def make_webhook(
    order_id: str, index: int, seed: int, updated_at: datetime | None = None, webhook_id: str | None = None
) -> Webhook:
    pairs, totals = _cycles(seed, order_id)
    financial, fulfillment = pairs[index % len(pairs)]
    at = updated_at or BASE_TIME + timedelta(seconds=index)
    payload: dict[str, object] = {
        "id": order_id,
        "updated_at": at.isoformat(),
        "financial_status": financial,
        "fulfillment_status": fulfillment,
        "total_price": totals[index % len(totals)],
        "currency": "EUR",
        "shipping_lines": [{"price": "5.00", "title": "Standard"}],
    }
    return Webhook(webhook_id or f"chaos-webhook-{order_id}-{index}", order_id, index, at, payload)


def order_updates(order_id: str, load: Load) -> list[Webhook]:
    """The ``updates_per_order`` webhooks of one order. A tied update shares its predecessor's updated_at;
    every member of a tie group gets an id with a random key, so the id order within it is random."""
    rng = random.Random(f"{load.seed}:{order_id}:ties")
    n = load.updates_per_order
    tied = [False] + [rng.random() < load.tie_ratio for _ in range(1, n)]
    webhooks: list[Webhook] = []
    second = 0
    for i in range(n):
        second = second if tied[i] else i
        in_group = tied[i] or (i + 1 < n and tied[i + 1])
        key = rng.getrandbits(16)
        webhook_id = f"chaos-tie-{order_id}-{key:04x}-{i}" if in_group else None
        webhooks.append(make_webhook(order_id, i, load.seed, BASE_TIME + timedelta(seconds=second), webhook_id))
    return webhooks


def all_webhooks(load: Load, run_id: str = "") -> list[Webhook]:
    """Every valid webhook of the test, update-major (update 0 of every order, then update 1, ...)."""
    per_order = [order_updates(order, load) for order in order_ids(load, run_id)]
    return [updates[i] for i in range(load.updates_per_order) for updates in per_order]


def poison_kind(webhook_id: str) -> PoisonKind:
    """The kind of a poison webhook, from its id (``chaos-poison-<name>-...``)."""
    return next(kind for name, (kind, _) in POISON.items() if webhook_id.startswith(f"chaos-poison-{name}-"))


def poison_webhook(victim: Webhook, name: str, seed: int, webhook_id: str) -> Webhook:
    """A signed webhook for ``victim``'s order (so its partition) whose body is spoilt as ``POISON[name]``."""
    base = make_webhook(victim.order_id, victim.index, seed, victim.updated_at + FORGED_OFFSET, webhook_id)
    payload = dict(base.payload)
    POISON[name][1](payload)
    return Webhook(webhook_id, victim.order_id, victim.index, base.updated_at, payload)


def runner_share(load: Load, runner_index: int, run_id: str = "") -> list[Webhook]:
    """Runner ``r`` of ``parallelism`` sends every webhook whose position ``% parallelism == r``."""
    if not 0 <= runner_index < load.parallelism:
        raise ValueError(f"runner index {runner_index} out of range 0..{load.parallelism - 1}")
    return all_webhooks(load, run_id)[runner_index :: load.parallelism]


def _count(ratio: float, total: int) -> int:
    return round(ratio * total)


def plan(load: Load, runner_index: int, run_id: str = "") -> list[Request]:
    """The requests runner ``runner_index`` sends, in send order."""
    share = runner_share(load, runner_index, run_id)
    rng = random.Random(f"{load.seed}:runner:{runner_index}")
    requests = [Request(w, "valid") for w in share]
    # out of order: a share of the positions exchange their webhooks at random
    positions = sorted(rng.sample(range(len(requests)), _count(load.out_of_order_ratio, len(requests))))
    moved = [requests[p] for p in positions]
    rng.shuffle(moved)
    for position, request in zip(positions, moved, strict=True):
        requests[position] = request
    # duplicates: a second delivery of the same webhook, somewhere after the first
    for original in rng.sample(share, _count(load.duplicate_ratio, len(share))):
        first = next(i for i, r in enumerate(requests) if r.webhook is original)
        requests.insert(rng.randint(first + 1, len(requests)), Request(original, "duplicate"))
    # invalid signatures: extra requests that must be answered 401 and never stored
    for j in range(_count(load.invalid_signature_ratio, len(share))):
        victim = share[rng.randrange(len(share))]
        forged = make_webhook(
            victim.order_id,
            victim.index,
            load.seed + 1,
            victim.updated_at + FORGED_OFFSET,
            f"chaos-invalid-{victim.order_id}-{runner_index}-{j}",
        )
        requests.insert(rng.randint(0, len(requests)), Request(forged, "invalid_signature"))
    # poison: signed, valid JSON, an invalid order; every chosen kind in turn
    names = [name for name, (kind, _) in POISON.items() if kind in load.poison_kinds]
    for j in range(_count(load.poison_ratio, len(share))):
        victim = share[rng.randrange(len(share))]
        name = names[j % len(names)]
        poison_id = f"chaos-poison-{name}-{victim.order_id}-{runner_index}-{j}"
        poison = poison_webhook(victim, name, load.seed + 2, poison_id)
        requests.insert(rng.randint(0, len(requests)), Request(poison, "poison"))
    return requests


def full_plan(load: Load, run_id: str = "") -> list[Request]:
    """What every runner sends (the verifier's view of the whole test)."""
    return [r for index in range(load.parallelism) for r in plan(load, index, run_id)]
