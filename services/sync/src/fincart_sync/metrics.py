"""Prometheus metrics of the sync service (names agreed in docs/HELPERS.md)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLIENTS = Gauge("fincart_sync_clients", "WebSocket clients connected to /sync")
EVENTS_FANNED_OUT = Counter(
    "fincart_sync_events_fanned_out_total", "Event frames sent to WebSocket clients (one per client per event)"
)
SEND_LAG = Histogram(
    "fincart_sync_send_lag_seconds",
    "From the event's store time in ORDER_EVENTS to its frame being written to a client",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBHOOK_TO_FRAME = Histogram(
    "fincart_sync_webhook_to_frame_seconds",
    "End to end: from ingest receiving the webhook to its event's frame being written to a client",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
RESUMES = Counter("fincart_sync_resumes_total", "Connections that resumed with ?since=")
SLOW_CLIENT_DISCONNECTS = Counter(
    "fincart_sync_slow_client_disconnects_total", "Clients closed with 4008 because their buffer overflowed"
)
AUTH_FAILURES = Counter(
    "fincart_sync_auth_failures_total", "Requests and WebSocket connections refused for their token", ["reason"]
)
REFUSED_CONNECTIONS = Counter(
    "fincart_sync_refused_connections_total", "WebSocket connections refused before any data", ["reason"]
)
