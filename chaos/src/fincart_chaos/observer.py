"""The WebSocket observer: records what the sync service sends, for invariant I6.

It speaks the ``/sync`` protocol (services/sync/src/fincart_sync/protocol.py): a snapshot or a resume,
then events; on a dropped connection it resumes with ``since`` = the greatest seq seen, a bounded
number of times. ``ResumingObserver`` drops its connection on purpose at random points and comes back
from ``since`` or from a new snapshot (also right after one), to be compared with the steady observer.
``replay`` reads the stream's history after the fact (the verification Job's way).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Collection
from datetime import datetime
from decimal import Decimal
from typing import Any

import websockets
from pydantic import BaseModel

from fincart_chaos.sync_endpoint import CONNECT_TIMEOUT_S, SyncEndpoint

RECONNECTS = 50


class Seen(BaseModel):
    """One order state a client was given: by a snapshot (``snapshot``) or an event; ``reset`` marks the
    start of a snapshot (page 0: the client drops what it held) and names no order."""

    kind: str  # "snapshot" | "event" | "reset"
    seq: int
    order_id: str
    version: int
    status: str
    shipping_fee: str
    last_webhook_id: str
    received_at: float
    total_price: Decimal | None = None
    last_external_updated_at: datetime | None = None


def _seen(kind: str, seq: int, order: dict[str, Any]) -> Seen:
    return Seen(
        kind=kind,
        seq=seq,
        order_id=order["shopify_order_id"],
        version=order["version"],
        status=order["status"],
        shipping_fee=str(order["shipping_fee"]),
        last_webhook_id=order["last_webhook_id"],
        received_at=time.time(),
        total_price=order.get("total_price"),
        last_external_updated_at=order.get("last_external_updated_at"),
    )


def _reset(seq: int) -> Seen:
    return Seen(
        kind="reset",
        seq=seq,
        order_id="",
        version=0,
        status="",
        shipping_fee="0",
        last_webhook_id="",
        received_at=time.time(),
    )


class Observer:
    """Records every frame's orders into ``log`` until ``stop()``; ``order`` filters to one order."""

    def __init__(
        self, sync: SyncEndpoint, order: str | None = None, on_event: Callable[[Seen], None] | None = None
    ) -> None:
        self.sync = sync
        self.order = order
        self.on_event = on_event
        self.log: list[Seen] = []
        self.cursor: int | None = None
        self.partial_snapshot = False  # a snapshot's first page came, its last one not yet
        self.connections = 0
        self.problems: list[str] = []
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()

    def take(self, frame: dict[str, Any]) -> None:
        """Record a frame. The cursor (what a resume may start after) moves with events and heartbeats, and
        with a snapshot only at its last page; never with a resume frame, whose seq announces events that
        are still to come: resuming from it after a cut-off replay would skip them."""
        kind = frame.get("type")
        if kind == "snapshot":
            if frame.get("page") == 0:
                self.log.append(_reset(frame["seq"]))
                self.partial_snapshot = True
            self.log.extend(_seen("snapshot", frame["seq"], o) for o in frame["orders"])
            if frame.get("last"):
                self.partial_snapshot = False
                self.ready.set()
        elif kind == "event":
            seen = _seen("event", frame["seq"], frame["order"])
            self.log.append(seen)
            if self.on_event:
                self.on_event(seen)
        elif kind == "resume":
            self.ready.set()
        elif kind == "error":
            self.problems.append(f"server error {frame.get('code')}: {frame.get('message')}")
        if kind in ("event", "heartbeat") or (kind == "snapshot" and frame.get("last")):
            self.cursor = max(self.cursor or 0, frame["seq"])

    @property
    def resume_from(self) -> int | None:
        """``since`` for the next connection: None (a new snapshot) while a snapshot is incomplete."""
        return None if self.partial_snapshot else self.cursor

    async def run(self) -> None:
        for attempt in range(RECONNECTS):
            if self._stopping.is_set():
                return
            try:
                async with self.sync.websocket(order=self.order, since=self.resume_from) as ws:
                    self.connections += 1
                    stop = asyncio.ensure_future(self._stopping.wait())
                    try:
                        while True:
                            recv = asyncio.ensure_future(ws.recv())
                            done, _ = await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
                            if recv not in done:
                                recv.cancel()
                                return
                            self.take(json.loads(recv.result()))
                    finally:
                        stop.cancel()
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                self.problems.append(f"connection {attempt + 1}: {type(exc).__name__}: {exc}")
            if await _wait(self._stopping, min(0.2 * 2**attempt, 2.0)):
                return
        self.problems.append(f"gave up after {RECONNECTS} connections")

    async def stop(self) -> None:
        self._stopping.set()


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


class ReplayUnavailable(Exception):
    """The sync service answered the replay with a snapshot: the events from ``since`` are not all there."""


async def _read_until_covered(
    ws: websockets.ClientConnection, observer: Observer, since: int = 0, snapshot_ok: bool = True
) -> None:
    """Frames into ``observer`` until it covered the stream position announced by the resume frame (or
    the snapshot's last page); ``snapshot_ok`` False: a snapshot instead of the events is ReplayUnavailable."""
    end: int | None = None
    more_pages = False
    covered = since  # greatest seq delivered; the resume frame announces ``end`` but delivers nothing itself
    while end is None or more_pages or covered < end:
        frame = json.loads(await ws.recv())
        if frame.get("type") == "resume":
            end = frame["seq"]
        elif frame.get("type") == "snapshot":
            end, more_pages = frame["seq"], not frame.get("last")
            if frame.get("page") == 0 and not snapshot_ok:
                raise ReplayUnavailable(
                    f"the events could not be replayed from sequence {since} ({frame.get('reason')})"
                )
        elif frame.get("type") == "error":
            raise ConnectionError(f"sync refused the connection: {frame.get('message')}")
        if frame.get("type") != "resume":
            covered = max(covered, frame.get("seq", 0))
        observer.take(frame)


async def replay(
    sync: SyncEndpoint, order_ids: Collection[str], timeout: float, since: int = 0
) -> tuple[list[Seen], list[str]]:
    """Every event after stream sequence ``since`` for ``order_ids``, as a client resuming from ``since``
    gets them (``since``: where the stream stood when the test started, so a long-lived stream is not
    replayed from 0 past FINCART_REPLAY_MAX_EVENTS)."""
    wanted = set(order_ids)
    observer = Observer(sync)
    async with asyncio.timeout(timeout), sync.websocket(since=since) as ws:
        await _read_until_covered(ws, observer, since, snapshot_ok=False)
    log = [seen for seen in observer.log if seen.order_id in wanted]
    return log, observer.problems


RESUME_MODES = ("since", "snapshot", "after-snapshot")
MAX_FRAMES_PER_CONNECTION = 50
MAX_CONNECTED_S = 1.5  # with few events flowing, hang up after a while anyway


class ResumingObserver(Observer):
    """An observer that hangs up on purpose: after a random number of frames it disconnects and comes
    back, by turns with ``since`` = its cursor, with a new snapshot, or with a snapshot and, right after
    its last page, a ``since`` resume from the snapshot's seq (where a snapshot stamped with the wrong
    seq skips or repeats events). ``catch_up`` ends it with one resume to the stream's end."""

    def __init__(self, sync: SyncEndpoint, seed: int, order: str | None = None) -> None:
        super().__init__(sync, order)
        self._rng = random.Random(seed)
        self.resumes: Counter[str] = Counter()

    async def run(self) -> None:
        mode = "snapshot"
        while not self._stopping.is_set() and self.connections < RECONNECTS * 20:
            since = self.resume_from if mode == "since" else None
            budget = self._rng.randint(1, MAX_FRAMES_PER_CONNECTION)
            try:
                async with self.sync.websocket(order=self.order, since=since) as ws:
                    self.connections += 1
                    self.resumes[mode] += 1
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._rng.uniform(0.1, MAX_CONNECTED_S)):
                            await self._read(ws, budget, until_snapshot=mode == "after-snapshot")
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                self.problems.append(f"resuming observer: {type(exc).__name__}: {exc}")
            # after a snapshot: resume from its seq without having read a single event since
            mode = "since" if mode == "after-snapshot" else self._rng.choice(RESUME_MODES)
            if await _wait(self._stopping, self._rng.uniform(0.0, 0.3)):
                return

    async def _read(self, ws: websockets.ClientConnection, budget: int, until_snapshot: bool) -> None:
        for _ in range(budget):
            recv = asyncio.ensure_future(ws.recv())
            stop = asyncio.ensure_future(self._stopping.wait())
            try:
                done, _ = await asyncio.wait({recv, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not recv.done():
                    recv.cancel()
            if recv not in done:
                return
            frame = json.loads(recv.result())
            self.take(frame)
            if until_snapshot and frame.get("type") == "snapshot" and frame.get("last"):
                return

    async def catch_up(self, timeout: float) -> None:
        """One last resume from the cursor (a snapshot when there is none) up to the stream's end."""
        since = self.resume_from
        try:
            async with asyncio.timeout(timeout), self.sync.websocket(order=self.order, since=since) as ws:
                await _read_until_covered(ws, self, since or 0)
        except (OSError, TimeoutError, ConnectionError, websockets.WebSocketException) as exc:
            self.problems.append(f"resuming observer could not catch up: {type(exc).__name__}: {exc}")


PROBE_ORDER = "fincart-chaos-stream-position"  # an order no test has: its snapshot is empty, its seq is the stream's


async def stream_position(sync: SyncEndpoint, timeout: float = CONNECT_TIMEOUT_S) -> int:
    """The ORDER_EVENTS stream's last sequence now (a runner records it before its first request)."""
    async with asyncio.timeout(timeout), sync.websocket(order=PROBE_ORDER) as ws:
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "snapshot":
                return int(frame["seq"])
            if frame.get("type") == "error":
                raise ConnectionError(f"sync refused the connection: {frame.get('message')}")
