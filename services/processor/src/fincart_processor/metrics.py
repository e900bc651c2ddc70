"""Prometheus metrics of the processor (names agreed in docs/HELPERS.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Histogram(
    "fincart_processor_batch_size", "Messages per applied batch", buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)
)
APPLY_SECONDS = Histogram(
    "fincart_processor_apply_seconds",
    "One batch: transaction, event publishing and acks",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
WEBHOOKS = Counter("fincart_processor_webhooks_total", "Webhooks by audit result", ["result"])
for _result in ("processed", "discarded", "failed"):  # exported at 0 from the start: the first one is an increase
    WEBHOOKS.labels(_result)
REDELIVERIES = Counter(
    "fincart_processor_redeliveries_total", "Messages delivered again (num_delivered > 1) or already in audit_log"
)
DEAD_LETTERS = Counter(
    "fincart_processor_dead_letters_total",
    "Messages that can never be applied, audited failed and sent to the dead-letter subject, by reason: "
    "invalid (not a webhook) or rejected (refused by the database or the domain code)",
    ["reason"],
)
for _reason in ("invalid", "rejected"):  # exported at 0 from the start, like WEBHOOKS
    DEAD_LETTERS.labels(_reason)
CONSUMER_LAG = Gauge("fincart_processor_consumer_lag", "Messages not yet delivered, per partition", ["partition"])
EVENTS_PUBLISHED = Counter("fincart_processor_events_published_total", "Change events published to ORDER_EVENTS")
TRANSIENT_ERRORS = Counter("fincart_processor_transient_errors_total", "Batch attempts that failed and were retried")
DB_TIMEOUTS = Counter(
    "fincart_processor_db_timeouts_total",
    "PostgreSQL waits cut by FINCART_DB_ACQUIRE_TIMEOUT_S / FINCART_DB_QUERY_TIMEOUT_S (the database unreachable or "
    "stuck), by operation: batch (retried, then nak'ed) or lease_round (leases given up when they expire)",
    ["operation"],
)
for _operation in ("batch", "lease_round"):
    DB_TIMEOUTS.labels(_operation)
PARTITION_OWNED = Gauge(
    "fincart_processor_partition_owned", "1 for each partition whose lease this replica holds, else 0", ["partition"]
)
LEASE_CHANGES = Counter(
    "fincart_processor_lease_changes_total", "Partition leases acquired, released (handed over) or lost", ["change"]
)
