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


class PublishFailed(Exception):
    """JetStream did not acknowledge: the webhook is not stored and must be retried by the sender."""


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

    async def publish(self, message: WebhookMessage, order_id: str) -> Published:
        # Nats-Msg-Id makes a repeat within the stream's duplicate window a no-op that JetStream reports.
        headers = inject_headers({"Nats-Msg-Id": message.webhook_id})
        started = time.perf_counter()
        try:
            ack = await self._js.publish(
                self._topology.webhook_subject_for(order_id), message.model_dump_json().encode(),
                timeout=self._timeout, headers=headers,
            )
        except (NatsError, TimeoutError, OSError) as exc:
            PUBLISH_FAILURES.inc()
            raise PublishFailed(f"{exc.__class__.__name__}: {exc}") from exc
        PUBLISH_SECONDS.observe(time.perf_counter() - started)
        return Published(duplicate=bool(ack.duplicate), stream_seq=ack.seq)
