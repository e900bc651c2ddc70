"""Publishes accepted webhooks to the ORDERS stream and waits for the PubAck (durably stored)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.partition import Topology
from fincart_core.telemetry import inject_headers
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import Header

from fincart_ingest.metrics import PUBLISH_FAILURES, PUBLISH_SECONDS

# Room left in the broker's max_payload for what the publisher adds to a body: the NATS headers (Nats-Msg-Id,
# traceparent, tracestate) and the WebhookMessage fields around the order. Bodies up to max_payload minus
# this are read; the exact size of each message is checked again before it is published.
ENVELOPE_RESERVE_BYTES = 4096
_HEADER_FRAMING = len(b"NATS/1.0\r\n") + len(b"\r\n")
_HEADER_LINE_FRAMING = len(b": \r\n")
NO_RESPONDERS = "503"  # the status of the server's answer when no stream takes the subject


class PublishFailed(Exception):
    """JetStream did not acknowledge: the webhook is not stored and must be retried by the sender."""


class TooLarge(Exception):
    """The message would exceed the broker's max_payload: it can never be published (the client gets 413)."""


@dataclass
class Published:
    duplicate: bool
    stream_seq: int


class WebhookPublisher:
    """JetStream publishes whose PubAcks come back on one inbox subscription of this publisher, each matched to
    its publish by a counter token, with one timer per publish: nats-py's ``js.publish`` (a request) adds a
    random token, an ``asyncio.wait_for`` and a PubAck object per webhook, a third of what publishing cost."""

    def __init__(self, nc: NATS, topology: Topology, timeout_s: float) -> None:
        self._nc = nc
        self._topology = topology
        self._timeout = timeout_s
        self._inbox = ""
        self._tokens = itertools.count()
        self._pending: dict[str, asyncio.Future[Msg]] = {}

    async def start(self) -> None:
        self._inbox = f"{self._nc.new_inbox()}."
        await self._nc.subscribe(f"{self._inbox}*", cb=self._on_ack)

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
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        self._pending[token] = answer = loop.create_future()
        timer = loop.call_later(self._timeout, _expire, answer)
        try:
            await self._nc.publish(
                self._topology.webhook_subject_for(order_id), data, reply=self._inbox + token, headers=headers
            )
            ack = _pub_ack(await answer)
        except (NatsError, TimeoutError, OSError) as exc:
            PUBLISH_FAILURES.inc()
            raise PublishFailed(f"{exc.__class__.__name__}: {exc}") from exc
        finally:
            timer.cancel()
            self._pending.pop(token, None)
        PUBLISH_SECONDS.observe(time.perf_counter() - started)
        return Published(duplicate=bool(ack.get("duplicate")), stream_seq=ack.get("seq", 0))

    async def _on_ack(self, msg: Msg) -> None:
        answer = self._pending.pop(msg.subject[len(self._inbox) :], None)
        if answer is not None and not answer.done():  # else a late answer to a publish that timed out
            answer.set_result(msg)


def _expire(answer: asyncio.Future[Msg]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError("no PubAck from JetStream in time"))


def _pub_ack(msg: Msg) -> dict[str, Any]:
    """The PubAck's fields, or NatsError for the server's no-responders status or a JetStream error."""
    if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS:
        raise NatsError("no JetStream stream takes the subject (no responders)")
    try:
        ack: dict[str, Any] = json.loads(msg.data)
    except ValueError as exc:
        raise NatsError(f"unreadable PubAck {msg.data[:100]!r}") from exc
    if "error" in ack:
        raise NatsError(f"JetStream refused the message: {ack['error']}")
    return ack
