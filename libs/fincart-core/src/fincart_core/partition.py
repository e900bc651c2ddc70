"""The one place that maps an order to its partition and names the NATS subjects and streams."""

from __future__ import annotations

import zlib
from dataclasses import dataclass


def partition_for(order_id: str, partitions: int) -> int:
    """``crc32(order_id) % partitions``: stable across processes, languages and restarts."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return zlib.crc32(order_id.encode("utf-8")) % partitions


@dataclass(frozen=True)
class Topology:
    """Stream and subject names; ``prefix`` isolates tests and side-by-side installs."""

    partitions: int = 16
    prefix: str = ""

    def _name(self, base: str) -> str:
        return f"{self.prefix.upper()}_{base}" if self.prefix else base

    def _subject(self, base: str) -> str:
        return f"{self.prefix.lower()}.{base}" if self.prefix else base

    # One property per stream and subject name (alike in shape): callers name what they mean.
    @property
    def orders_stream(self) -> str:
        return self._name("ORDERS")

    @property
    def events_stream(self) -> str:
        return self._name("ORDER_EVENTS")

    @property
    def dlq_stream(self) -> str:
        return self._name("ORDERS_DLQ")

    @property
    def webhooks_wildcard(self) -> str:
        return self._subject("orders.webhooks.*")

    @property
    def events_wildcard(self) -> str:
        return self._subject("orders.events.*")

    @property
    def dlq_subject(self) -> str:
        return self._subject("orders.dlq")

    def webhook_subject(self, partition: int) -> str:
        return self._subject(f"orders.webhooks.{partition}")

    def event_subject(self, partition: int) -> str:
        return self._subject(f"orders.events.{partition}")

    def consumer_name(self, partition: int) -> str:
        return f"processor-{partition}"

    def webhook_subject_for(self, order_id: str) -> str:
        return self.webhook_subject(partition_for(order_id, self.partitions))

    def event_subject_for(self, order_id: str) -> str:
        return self.event_subject(partition_for(order_id, self.partitions))
