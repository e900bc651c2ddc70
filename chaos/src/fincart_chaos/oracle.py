"""The verifier's own statement of the domain rules, written from README.md "Domain rules" and not from
``fincart_core.domain``: the processor and the workload use that module, so a wrong fee tier or status
mapping there would be invisible to a verifier that asked it for the expected state.

A table of cases, not an algorithm: every ``financial_status`` and ``fulfillment_status`` the README
names, and the fee tiers as closed/open bounds in cents.
"""

from __future__ import annotations

from decimal import Decimal

# README: "status from fulfillment_status when present (fulfilled -> SHIPPED, partial -> CONFIRMED,
# restocked -> CANCELLED)"
BY_FULFILLMENT = {"fulfilled": "SHIPPED", "partial": "CONFIRMED", "restocked": "CANCELLED"}
# README: "else from financial_status (pending, authorized -> PENDING; paid, partially_paid,
# partially_refunded -> CONFIRMED; refunded, voided -> CANCELLED; unknown -> PENDING)"
BY_FINANCIAL = {
    "pending": "PENDING",
    "authorized": "PENDING",
    "paid": "CONFIRMED",
    "partially_paid": "CONFIRMED",
    "partially_refunded": "CONFIRMED",
    "refunded": "CANCELLED",
    "voided": "CANCELLED",
}
UNKNOWN_STATUS = "PENDING"
# README: "shipping fee by total_price: < 50 -> 9.99, < 100 -> 7.99, < 200 -> 5.99, else 0.00",
# as (lowest total in cents, highest total in cents or None, fee)
FEE_TABLE = (
    (0, 4999, Decimal("9.99")),
    (5000, 9999, Decimal("7.99")),
    (10000, 19999, Decimal("5.99")),
    (20000, None, Decimal("0.00")),
)


def expected_status(financial_status: object, fulfillment_status: object) -> str:
    if isinstance(fulfillment_status, str) and fulfillment_status in BY_FULFILLMENT:
        return BY_FULFILLMENT[fulfillment_status]
    return BY_FINANCIAL.get(financial_status, UNKNOWN_STATUS) if isinstance(financial_status, str) else UNKNOWN_STATUS


def expected_fee(total_price: object) -> Decimal:
    """The fee for a total (a string or number of at most two decimals, as Shopify sends it)."""
    cents = int((Decimal(str(total_price)) * 100).to_integral_value())
    for low, high, fee in FEE_TABLE:
        if cents >= low and (high is None or cents <= high):
            return fee
    return FEE_TABLE[0][2]  # a negative total: the README's "< 50"


def expected(payload: dict[str, object]) -> tuple[str, Decimal]:
    """(status, shipping fee) the README's rules give a webhook body."""
    return (
        expected_status(payload.get("financial_status"), payload.get("fulfillment_status")),
        expected_fee(payload.get("total_price", "0")),
    )
