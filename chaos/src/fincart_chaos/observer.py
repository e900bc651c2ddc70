"""The WebSocket observer: records what the sync service sends, for invariant I6.

It speaks the ``/sync`` protocol (services/sync/src/fincart_sync/protocol.py): a snapshot or a resume,
then events; on a dropped connection it resumes with ``since`` = the greatest seq seen, a bounded
number of times. ``replay`` reads the stream's history after the fact (the verification Job's way).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import urlencode, urlsplit

import websockets
from pydantic import BaseModel

RECONNECTS = 50
CONNECT_TIMEOUT_S = 10.0


class Seen(BaseModel):
    """One order state a client was given: by a snapshot (``snapshot``) or an event."""

    kind: str  # "snapshot" | "event"
    seq: int
    order_id: str
    version: int
    status: str
    shipping_fee: str
    last_webhook_id: str
    received_at: float


def ws_url(sync_url: str, **query: str | int) -> str:
    base = sync_url.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    params = urlencode({k: v for k, v in query.items() if v is not None})
    return f"{base}/sync{'?' + params if params else ''}"


def connect(sync_url: str, host: str | None = None, **query: str | int) -> websockets.connect:
    """Open ``/sync``; with ``host`` the Host header is that name while the TCP connection still goes to
    ``sync_url`` (an ingress controller's Service routing on the Ingress host)."""
    url, tcp = ws_url(sync_url, **query), dict[str, Any]()
    if host:
        target = urlsplit(sync_url)
        url = ws_url(target._replace(netloc=host).geturl(), **query)
        tcp = {"host": target.hostname, "port": target.port or (443 if target.scheme == "https" else 80)}
    return websockets.connect(url, open_timeout=CONNECT_TIMEOUT_S, max_size=None, **tcp)


def _seen(kind: str, seq: int, order: dict) -> Seen:
    return Seen(kind=kind, seq=seq, order_id=order["shopify_order_id"], version=order["version"],
                status=order["status"], shipping_fee=str(order["shipping_fee"]),
                last_webhook_id=order["last_webhook_id"], received_at=time.time())


class Observer:
    """Records every frame's orders into ``log`` until ``stop()``; ``order`` filters to one order."""

    def __init__(self, sync_url: str, order: str | None = None, host: str | None = None) -> None:
        self.sync_url = sync_url
        self.host = host
        self.order = order
        self.log: list[Seen] = []
        self.cursor: int | None = None
        self.connections = 0
        self.problems: list[str] = []
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()

    def take(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "snapshot":
            self.log.extend(_seen("snapshot", frame["seq"], o) for o in frame["orders"])
            if frame.get("last"):
                self.ready.set()
        elif kind == "event":
            self.log.append(_seen("event", frame["seq"], frame["order"]))
        elif kind == "resume":
            self.ready.set()
        elif kind == "error":
            self.problems.append(f"server error {frame.get('code')}: {frame.get('message')}")
        if "seq" in frame:
            self.cursor = max(self.cursor or 0, frame["seq"])

    async def run(self) -> None:
        for attempt in range(RECONNECTS):
            if self._stopping.is_set():
                return
            try:
                async with connect(self.sync_url, self.host, order=self.order, since=self.cursor) as ws:  # type: ignore[arg-type]
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


async def replay(sync_url: str, order_ids: Collection[str], timeout: float, host: str | None = None,
                 ) -> tuple[list[Seen], list[str]]:
    """Every event the stream still holds for ``order_ids``, as a client resuming from 0 gets them."""
    wanted = set(order_ids)
    observer = Observer(sync_url)
    async with asyncio.timeout(timeout), connect(sync_url, host, since=0) as ws:
        end: int | None = None
        more_pages = False
        covered = 0  # greatest seq delivered; the resume frame announces ``end`` but delivers nothing itself
        while end is None or more_pages or covered < end:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "resume":
                end = frame["seq"]
            elif frame.get("type") == "snapshot":
                end, more_pages = frame["seq"], not frame.get("last")
                if frame.get("page") == 0:
                    observer.problems.append(f"the stream could not be replayed from 0 ({frame.get('reason')})")
            elif frame.get("type") == "error":
                raise ConnectionError(f"sync refused the replay: {frame.get('message')}")
            if frame.get("type") != "resume":
                covered = max(covered, frame.get("seq", 0))
            observer.take(frame)
    log = [seen for seen in observer.log if seen.order_id in wanted]
    return log, observer.problems
