"""Publishes accepted webhooks to the ORDERS stream and waits for the PubAck (durably stored)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.partition import Topology
from fincart_core.telemetry import inject_headers
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from fincart_ingest.metrics import PUBLISH_FAILURES, PUBLISH_SECONDS

# Room left in the broker's max_payload for what the publisher adds to a body: the NATS headers (Nats-Msg-Id,
# traceparent, tracestate) and the WebhookMessage fields around the order. Bodies up to max_payload minus
# this are read; the exact size of each message is checked again before it is published.
ENVELOPE_RESERVE_BYTES = 4096
_HEADER_FRAMING = len(b"NATS/1.0\r\n") + len(b"\r\n")
_HEADER_LINE_FRAMING = len(b": \r\n")


class PublishFailed(Exception):
    """JetStream did not acknowledge: the webhook is not stored and must be retried by the sender."""


class TooLarge(Exception):
    """The message would exceed the broker's max_payload: it can never be published (the client gets 413)."""


@dataclass
class Published:
    duplicate: bool
    stream_seq: int


class WebhookPublisher:
    def __init__(self, nc: NATS, js: JetStreamContext, topology: Topology, timeout_s: float) -> None:
        self._nc = nc
        self._js = js
        self._topology = topology
        self._timeout = timeout_s

    @property
    def connected(self) -> bool:
        return self._nc.is_connected

    def body_limit(self, configured: int) -> int:
        """The largest body worth reading: FINCART_MAX_BODY_BYTES, or less when the broker's max_payload (from
        the server's INFO) minus the envelope is smaller."""
        return min(configured, self._nc.max_payload - ENVELOPE_RESERVE_BYTES)

    async def publish(self, message: WebhookMessage, order_id: str) -> Published:
        # Nats-Msg-Id makes a repeat within the stream's duplicate window a no-op that JetStream reports.
        headers = inject_headers({"Nats-Msg-Id": message.webhook_id})
        data = message.model_dump_json().encode()
        # the server counts headers and payload against max_payload and closes the connection of a publisher
        # that exceeds it (every other webhook in flight would fail with it)
        size = (
            len(data)
            + _HEADER_FRAMING
            + sum(len(key) + len(value.encode()) + _HEADER_LINE_FRAMING for key, value in headers.items())
        )
        if size > self._nc.max_payload:
            raise TooLarge(
                f"webhook of {size} bytes as published is over the broker's {self._nc.max_payload} byte max_payload"
            )
        started = time.perf_counter()
        try:
            ack = await self._js.publish(
                self._topology.webhook_subject_for(order_id),
                data,
                timeout=self._timeout,
                headers=headers,
            )
        except (NatsError, TimeoutError, OSError) as exc:
            PUBLISH_FAILURES.inc()
            raise PublishFailed(f"{exc.__class__.__name__}: {exc}") from exc
        PUBLISH_SECONDS.observe(time.perf_counter() - started)
        return Published(duplicate=bool(ack.duplicate), stream_seq=ack.seq)
