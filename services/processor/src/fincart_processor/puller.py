"""Pull requests for one durable JetStream consumer, answered on an inbox subscription of our own.

nats-py's ``PullSubscription.fetch`` waits for every message of a batch with a task, a uuid4 and a timer
of its own (~8 % of the processor's CPU while draining); here a callback collects the messages of a pull
request. The requests are fetch's: ``no_wait`` with ``expires`` first (the server waits up to the timeout
for the first message, then answers at once with what it has, up to the batch), and only when that brought
nothing, one that waits up to the timeout for the batch to fill. Messages that arrive after a fetch has
returned (a late answer to an expired request) are returned by the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DEFAULT_PREFIX, Header, StatusCode

log = logging.getLogger(__name__)

# the server's 408 at the end of a waiting request arrives just after its expiry: wait that much longer
EXPIRY_GRACE_S = 0.1
# What ends a request without its whole batch. A no_wait request ends at its first status (404 no messages,
# 408 nothing more now or expired, 409 ...). A waiting one ends at its expiry (408): other statuses (409
# leadership change, consumer deleted) are waited out like fetch does, instead of asking again in a loop.
NO_WAIT_ENDS = frozenset({StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT, StatusCode.CONFLICT})
WAITING_ENDS = frozenset({StatusCode.REQUEST_TIMEOUT})


class Puller:
    def __init__(self, nc: NATS, stream: str, durable: str) -> None:
        self._nc = nc
        self._next_subject = f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = ""
        self._sub: Subscription | None = None
        self._delivered: list[Msg] = []  # not returned by fetch yet
        self._wanted = 0
        self._ends: frozenset[str] = NO_WAIT_ENDS
        self._answered = asyncio.Event()  # the current request has its messages or its end status
        self._quiet_at = 0.0  # loop time after which the server answers none of our requests any more

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)

    async def stop(self) -> None:
        """Unsubscribe, then wait (at most a fetch timeout) until our last request has expired: a message the
        server sends to it from now on is delivered but never acked, and the partition's next owner must find
        it in the unacked range it re-applies first, not have it redelivered after newer ones."""
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the connection may be closing already
                await self._sub.unsubscribe()
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self._quiet_at - loop.time()))

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages in delivery order; empty when none came within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if (needed := batch - len(self._delivered)) > 0:
            request: dict[str, object] = {"batch": needed, "no_wait": True}
            if not self._delivered:  # nothing in hand: wait for the first message, not for a full batch
                request["expires"] = int(timeout * 1e9)
            await self._request(request, batch, timeout + EXPIRY_GRACE_S, NO_WAIT_ENDS)
        if not self._delivered and (remaining := deadline - loop.time()) > 0:
            await self._request(
                {"batch": batch, "expires": int(remaining * 1e9)}, batch, remaining + EXPIRY_GRACE_S, WAITING_ENDS
            )
        msgs, self._delivered = self._delivered[:batch], self._delivered[batch:]
        return msgs

    async def _request(self, request: dict[str, object], batch: int, wait_s: float, ends: frozenset[str]) -> None:
        self._wanted, self._ends = batch, ends
        self._answered.clear()
        self._quiet_at = max(self._quiet_at, asyncio.get_running_loop().time() + wait_s)
        await self._nc.publish(self._next_subject, json.dumps(request).encode(), reply=self._inbox)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._answered.wait(), max(wait_s, 0.0))

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get(Header.STATUS) if msg.headers else None
        if status is None:
            self._delivered.append(msg)
            if len(self._delivered) >= self._wanted:
                self._answered.set()
        elif status in self._ends:
            self._answered.set()


def ack_position(msg: Msg) -> tuple[int, int]:
    """(stream sequence, number of deliveries) of a JetStream message, read from its ack subject (v1 or v2
    format) as ``Msg.metadata`` reads them, without its timestamp and dataclasses (~2 us a message)."""
    tokens = msg.reply.split(".") if msg.reply else []
    if len(tokens) >= 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
            return int(tokens[5]), int(tokens[4])
        if len(tokens) >= 11:  # $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>...
            return int(tokens[7]), int(tokens[6])
    raise nats.errors.NotJSMessageError


async def quietly(signal: object) -> None:
    """Send an ack, nak or in_progress whose loss is harmless: the message comes back after ack_wait anyway."""
    try:
        await signal  # type: ignore[misc]
    except nats.errors.Error as exc:
        log.debug("ack signal failed", extra={"error": repr(exc)})
