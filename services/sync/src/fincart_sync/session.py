"""One ``/sync`` WebSocket connection: validate, snapshot or resume, then live events (see protocol.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg
from fastapi import WebSocket, WebSocketDisconnect
from fincart_core.auth import WS_PROTOCOL, ws_token
from fincart_core.partition import Topology
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from fincart_sync import metrics
from fincart_sync.admission import ConnectionCaps, origin_allowed
from fincart_sync.auth import Unauthorized, reader_id
from fincart_sync.event_feed import replay, stream_last_seq
from fincart_sync.hub import Client, Frame, Hub
from fincart_sync.orders_store import OrdersStore, StoreUnavailable
from fincart_sync.protocol import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_INTERNAL_ERROR,
    CLOSE_SLOW_CLIENT,
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    ErrorMessage,
    HeartbeatMessage,
    PongMessage,
    QueryError,
    ResumeMessage,
    SnapshotMessage,
    now,
    parse_client_message,
    parse_order,
    parse_since,
)
from fincart_sync.settings import SyncSettings

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 5.0
# Failures of a dependency that a retry can outlive (broker restart, dropped DB connections): 1013.
TRANSIENT_ERRORS = (
    NatsError,
    NatsTimeoutError,
    asyncio.TimeoutError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    StoreUnavailable,
)


@dataclass
class SyncContext:
    """What every session shares (built once by the app)."""

    hub: Hub
    js: JetStreamContext
    topology: Topology
    store: OrdersStore
    settings: SyncSettings
    caps: ConnectionCaps


class SlowClient(Exception):
    """A frame was not taken within the send deadline (the client is closed with 4008)."""


class Session:
    def __init__(self, ws: WebSocket, ctx: SyncContext) -> None:
        self.ws = ws
        self.ctx = ctx
        self.send_lock = asyncio.Lock()
        self.cursor = 0  # greatest seq this connection has covered (sent, or filtered out)
        self.positioned = False  # cursor is a resume point (false while a snapshot is being sent)
        self.holding = False  # the pump took a frame off the queue and has not sent it yet
        self.live = False
        self.client: Client | None = None
        self.pump_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        offered = self.ws.scope.get("subprotocols", [])
        await self.ws.accept(subprotocol=WS_PROTOCOL if WS_PROTOCOL in offered else None)
        settings = self.ctx.settings
        headers = self.ws.headers
        if not origin_allowed(headers.get("origin"), headers.get("host"), settings.ws_allowed_origins):
            metrics.REFUSED_CONNECTIONS.labels(reason="origin").inc()
            await self.close(CLOSE_FORBIDDEN_ORIGIN, "origin not allowed (FINCART_WS_ALLOWED_ORIGINS)")
            return
        try:
            reader = reader_id(ws_token(headers.get("authorization"), offered), settings.read_token_hashes)
        except Unauthorized as exc:
            await self.close(CLOSE_UNAUTHORIZED, str(exc))
            return
        try:
            since = parse_since(self.ws.query_params.get("since"))
            order = parse_order(self.ws.query_params.get("order"))
        except QueryError as exc:
            await self.close(CLOSE_BAD_REQUEST, str(exc))
            return
        refused = self.ctx.caps.admit(reader)
        if refused is not None:
            metrics.REFUSED_CONNECTIONS.labels(reason="cap").inc()
            await self.close(CLOSE_TOO_MANY if refused.per_token else CLOSE_TRY_AGAIN, refused.reason)
            return
        try:
            await self._serve(since, order)
        finally:
            self.ctx.caps.release(reader)

    async def _serve(self, since: int | None, order: str | None) -> None:
        if since is not None:  # until the resume has sent anything, the client's own since is its resume point
            self.cursor, self.positioned = since, True
        client = Client(order, self.ctx.settings.client_queue_size, on_overflow=self._overflow, covered=None)
        self.client = client
        # Registered before the stream position is read: every event after that position reaches the queue.
        self.ctx.hub.add(client)
        metrics.CLIENTS.inc()
        self.pump_task = asyncio.create_task(self._pump(client, since, order))
        tasks = {self.pump_task, asyncio.create_task(self._receive()), asyncio.create_task(self._heartbeat())}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            await self._finish(done)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.ctx.hub.remove(client)
            metrics.CLIENTS.dec()

    def _overflow(self, client: Client) -> None:
        if self.pump_task is not None:
            self.pump_task.cancel()

    async def _finish(self, done: set[asyncio.Task[None]]) -> None:
        """Close with the code that says why the first task ended (a client disconnect needs no close)."""
        assert self.client is not None and self.pump_task is not None
        errors = [task.exception() for task in done if not task.cancelled()]
        slow = next((str(e) for e in errors if isinstance(e, SlowClient)), None)
        if self.pump_task.cancelled() and self.client.overflowed:
            slow = f"more than {self.ctx.settings.client_queue_size} events buffered"
        if slow is not None:
            metrics.SLOW_CLIENT_DISCONNECTS.inc()
            await self.close(CLOSE_SLOW_CLIENT, f"slow client: {slow}; {self._resume_hint()}")
            return
        if self.pump_task not in done:
            return  # the client went away (receive ended)
        exc = None if self.pump_task.cancelled() else self.pump_task.exception()
        if exc is None or isinstance(exc, WebSocketDisconnect):
            return
        if isinstance(exc, TRANSIENT_ERRORS):
            log.warning("a dependency is unavailable for a client", extra={"error": repr(exc)})
            await self.close(CLOSE_TRY_AGAIN, f"stream or database unavailable, {self._resume_hint()}")
        else:
            log.error("sync session failed", exc_info=exc)
            await self.close(CLOSE_INTERNAL_ERROR, f"internal error, {self._resume_hint()}")

    def _resume_hint(self) -> str:
        # before the snapshot was complete there is no position to resume from: a new snapshot is needed
        return f"resume with since={self.cursor}" if self.positioned else "reconnect without since"

    async def _send(self, text: str) -> None:
        async with self.send_lock:
            await self._write(text)

    async def _write(self, text: str) -> None:
        """One frame within the send deadline (the caller holds ``send_lock``)."""
        timeout = self.ctx.settings.ws_send_timeout_s
        try:
            async with asyncio.timeout(timeout):
                await self.ws.send_text(text)
        except TimeoutError as exc:
            raise SlowClient(f"a frame not taken within {timeout:g}s") from exc

    async def _send_frame(self, frame: Frame) -> None:
        await self._send(frame.text)
        self.cursor = frame.seq
        metrics.EVENTS_FANNED_OUT.inc()
        now = time.time()
        metrics.SEND_LAG.observe(max(now - frame.stored_at, 0.0))
        if frame.received_at is not None:
            metrics.WEBHOOK_TO_FRAME.observe(max(now - frame.received_at, 0.0))

    async def _pump(self, client: Client, since: int | None, order: str | None) -> None:
        self.cursor = await self._start(client, since, order)
        self.positioned = True
        self.live = True
        queue = client.queue
        while True:
            frame = await queue.get()
            if frame.seq <= self.cursor:
                continue  # already in the snapshot's position or the replay
            self.holding = True
            await self._send_frame(frame)
            self.holding = False

    async def _start(self, client: Client, since: int | None, order: str | None) -> int:
        """Send the snapshot or the replay; returns the stream seq the connection is now consistent with."""
        ctx = self.ctx
        first, last = await stream_last_seq(ctx.js, ctx.topology)
        client.cover(last)
        reason = None
        if since is not None:
            if since > last:
                reason = "since_ahead_of_stream"
            elif since < last and since + 1 < first:
                reason = "since_no_longer_in_stream"
            elif last - since > ctx.settings.replay_max_events:
                reason = "since_too_far_back"
            else:
                metrics.RESUMES.inc()
                await self._send(ResumeMessage(since=since, seq=last).model_dump_json())
                async for frame in replay(ctx.js, ctx.topology, since, last, order, ctx.settings.replay_timeout_s):
                    await self._send_frame(frame)
                return last
        self.positioned = False  # a snapshot replaces the client's state: until it is complete, no resume point
        page_no = 0
        pages = ctx.store.snapshot(ctx.settings.snapshot_page_size, order)
        async with contextlib.aclosing(pages):
            async for orders, is_last in pages:
                message = SnapshotMessage(seq=last, page=page_no, last=is_last, reason=reason, orders=orders)
                await self._send(message.model_dump_json())
                page_no += 1
        return last

    async def _receive(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            kind = parse_client_message(message.get("text") or "")
            if kind == "ping":
                await self._send(PongMessage(ts=now()).model_dump_json())
            else:
                error = ErrorMessage(code=CLOSE_BAD_REQUEST, message='unknown message; send {"type": "ping"}')
                await self._send(error.model_dump_json())

    async def _heartbeat(self) -> None:
        interval = self.ctx.settings.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            if not self.live or self.client is None:
                continue
            async with self.send_lock:
                if not self.holding and self.client.queue.empty():
                    # nothing for this client is waiting: it has covered everything the hub has seen
                    self.cursor = max(self.cursor, self.ctx.hub.last_seq)
                await self._write(HeartbeatMessage(seq=self.cursor, ts=now()).model_dump_json())

    async def close(self, code: int, reason: str) -> None:
        reason = reason.encode()[:123].decode(errors="ignore")  # a close reason is at most 123 bytes
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.ws.send_text(ErrorMessage(code=code, message=reason).model_dump_json())
                await self.ws.close(code, reason)
