"""The workload: a pure function of (load spec, runner index, run id).

Reruns send the very same webhooks, and the verifier rebuilds what every runner sent from the spec
alone. Update ``i`` of an order has ``updated_at = BASE + i s`` and its own status and total (so its
own shipping fee); the send order is ascending except for a shuffled ``outOfOrderRatio`` share,
``duplicateRatio`` of the webhooks are sent a second time later on, and ``invalidSignatureRatio``
adds requests with a wrong HMAC whose update would win if it were ever stored.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from fincart_core.contracts.chaostest import Load
from fincart_core.domain import order_status, shipping_fee

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
SEED_ORDER = "order_chaos_test_12345"
FINANCIAL = ("pending", "authorized", "paid", "partially_paid", "partially_refunded", "refunded", "voided")
FULFILLMENT = (None, None, None, "fulfilled", "partial", "restocked")
TOTALS = ("19.90", "49.99", "50.00", "75.00", "99.99", "150.00", "199.99", "200.00", "350.00")
# an invalid-signature update lies far in the future: stored by mistake, it would become the final state
FORGED_OFFSET = timedelta(days=3650)

RequestKind = Literal["valid", "duplicate", "invalid_signature"]


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
        return order_status(str(self.payload["financial_status"]), self.payload.get("fulfillment_status"))  # type: ignore[arg-type]

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
        return self.kind != "invalid_signature"


def order_ids(load: Load, run_id: str = "") -> list[str]:
    """The seed scenario's order id for one order, else ``order_chaos_<seed>_<n>``; a run id makes them
    unique when several runs share a database (in the cluster)."""
    bases = [SEED_ORDER] if load.orders == 1 else [f"order_chaos_{load.seed}_{n}" for n in range(load.orders)]
    return [f"{base}-{run_id}" if run_id else base for base in bases]


def make_webhook(order_id: str, index: int, seed: int, updated_at: datetime | None = None,
                 webhook_id: str | None = None) -> Webhook:
    rng = random.Random(f"{seed}:{order_id}:{index}")
    at = updated_at or BASE_TIME + timedelta(seconds=index)
    payload: dict[str, object] = {
        "id": order_id,
        "updated_at": at.isoformat(),
        "financial_status": rng.choice(FINANCIAL),
        "fulfillment_status": rng.choice(FULFILLMENT),
        "total_price": rng.choice(TOTALS),
        "currency": "EUR",
        "shipping_lines": [{"price": "5.00", "title": "Standard"}],
    }
    return Webhook(webhook_id or f"chaos-webhook-{order_id}-{index}", order_id, index, at, payload)


def all_webhooks(load: Load, run_id: str = "") -> list[Webhook]:
    """Every valid webhook of the test, update-major (update 0 of every order, then update 1, ...)."""
    orders = order_ids(load, run_id)
    return [make_webhook(order, i, load.seed) for i in range(load.updates_per_order) for order in orders]


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
        forged = make_webhook(victim.order_id, victim.index, load.seed + 1, victim.updated_at + FORGED_OFFSET,
                              f"chaos-invalid-{victim.order_id}-{runner_index}-{j}")
        requests.insert(rng.randint(0, len(requests)), Request(forged, "invalid_signature"))
    return requests


def full_plan(load: Load, run_id: str = "") -> list[Request]:
    """What every runner sends (the verifier's view of the whole test)."""
    return [r for index in range(load.parallelism) for r in plan(load, index, run_id)]
