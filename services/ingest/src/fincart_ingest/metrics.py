"""Prometheus metrics of the ingest service (names agreed in docs/HELPERS.md)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("fincart_ingest_requests_total", "Webhook requests answered, by HTTP status", ["status"])
DEDUPE_HITS = Counter(
    "fincart_ingest_dedupe_hits_total", "Webhooks answered as duplicates (Redis mark or JetStream Nats-Msg-Id)"
)
PUBLISH_SECONDS = Histogram(
    "fincart_ingest_publish_seconds",
    "From publish to JetStream's PubAck",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
PUBLISH_FAILURES = Counter("fincart_ingest_publish_failures_total", "Publishes that got no PubAck (answered 503)")
REDIS_ERRORS = Counter("fincart_ingest_redis_errors_total", "Redis calls that failed (dedupe fell back to JetStream)")
