"""The ``/sync`` WebSocket protocol (the chaos engine's observer and the live page speak it).

Connect: ``ws://HOST:8082/sync`` with a read token, either in ``Authorization: Bearer <token>`` or (browsers)
as the subprotocols ``fincart.v1`` and ``fincart.bearer.<token>`` (the server selects ``fincart.v1``; see
fincart_core.auth), and optional query parameters

* ``order=<shopify_order_id>``: only this order (snapshot and events); 1..255 printable characters.
* ``since=<stream seq>``: resume. The server replays every event with ``seq > since`` from the
  ``ORDER_EVENTS`` stream, then continues live; no snapshot is sent. When the stream no longer holds
  ``since + 1`` (purged), or the gap is longer than ``FINCART_REPLAY_MAX_EVENTS``, or ``since`` is ahead
  of the stream (it was recreated), a snapshot is sent instead, with ``reason`` saying why.

Every frame is a JSON text message with a ``type``. Server to client:

``{"type": "snapshot", "seq": S, "page": i, "last": bool, "reason": str|null, "orders": [OrderState...]}``
    The orders as read from PostgreSQL after the stream's last sequence ``S`` was taken, so they include
    at least every event up to ``S`` (possibly later ones too). Large tables come in several pages
    (``page`` 0, 1, ...; ``last`` true on the final one). On page 0 the client drops the state it held.
``{"type": "resume", "since": N, "seq": S}``
    Resume accepted: the events with ``N < seq <= S`` (those that match ``order``) follow, then live ones.
``{"type": "event", "seq": n, "version": v, "order": OrderState}``
    One applied version of an order; ``seq`` is its ``ORDER_EVENTS`` stream sequence, strictly
    increasing on one connection; ``version == order.version``.
``{"type": "heartbeat", "seq": n, "ts": iso}``
    Sent every ``FINCART_HEARTBEAT_INTERVAL_S``. ``seq`` is the stream position this connection has
    covered (events after the snapshot/resume up to ``seq`` were sent or filtered out), so a filtered
    client can resume from it even when none of its orders changed.
``{"type": "pong", "ts": iso}``
    Answer to a client's ``{"type": "ping"}``.
``{"type": "error", "code": int, "message": str}``
    Sent right before the server closes the connection with that close code.

Client to server: ``{"type": "ping"}`` (anything else gets an ``error`` frame, the connection stays).

Client rules (what makes the view gap-free):

* Keep, per order, the version held. An event whose ``version <= held`` is a duplicate (the snapshot
  may already include it, a redelivered event may be re-published): drop it. ``version == held + 1`` is
  the next one: apply it. ``version > held + 1`` is a gap (an event the client never got): apply it and
  re-read the order with ``GET /orders/{id}`` (the live page does so). An order the client does not
  hold yet may start at any version when it came after a snapshot.
* Remember the greatest ``seq`` of the events and heartbeats seen, and a snapshot's ``seq`` once its last
  page arrived, and reconnect with ``?since=<that>``: replaying from ``seq + 1`` can only repeat events,
  never skip one. Not ``resume.seq``: it announces the replayed events still to come, and a connection cut
  during the replay would skip them.

Close codes: 4400 bad query parameter (reason names it; do not retry unchanged); 4401 missing or invalid
token; 4403 the browser's ``Origin`` is not allowed; 4429 the token holds
``FINCART_WS_MAX_CONNECTIONS_PER_TOKEN`` connections already; 4008 slow client: its buffer of
``FINCART_CLIENT_QUEUE_SIZE`` events overflowed or it did not take a frame within
``FINCART_WS_SEND_TIMEOUT_S`` (reason carries the seq to resume from, or says to reconnect without
``since`` when the snapshot was not complete); 1009 a client frame larger than
``FINCART_WS_MAX_MESSAGE_BYTES``; 1013 the event stream or the database is unavailable right now, or the
server is at ``FINCART_WS_MAX_CONNECTIONS``; 1011 unexpected server error; 1012 server restarting
(shutdown). 4008, 1013, 1011 and 1012 can be resumed with ``since``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from fincart_core.contracts.events import OrderState
from pydantic import BaseModel

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_TOO_MANY = 4429
CLOSE_SLOW_CLIENT = 4008
CLOSE_TRY_AGAIN = 1013
CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012  # sent by uvicorn on shutdown

ORDER_ID_MAX_LEN = 255


# One model per frame type (the protocol's schema): alike in shape, they share nothing but ``type``.
# One model per frame type of the wire protocol (alike in shape: each frame is a type tag and its fields).
class SnapshotMessage(BaseModel):
    type: Literal["snapshot"] = "snapshot"
    seq: int
    page: int
    last: bool
    reason: str | None = None
    orders: list[OrderState]


class ResumeMessage(BaseModel):
    type: Literal["resume"] = "resume"
    since: int
    seq: int


class EventMessage(BaseModel):
    type: Literal["event"] = "event"
    seq: int
    version: int
    order: OrderState


class HeartbeatMessage(BaseModel):
    type: Literal["heartbeat"] = "heartbeat"
    seq: int
    ts: datetime


class PongMessage(BaseModel):
    type: Literal["pong"] = "pong"
    ts: datetime


class ErrorMessage(BaseModel):
    type: Literal["error"] = "error"
    code: int
    message: str


def event_frame(seq: int, order_json: str, version: int) -> str:
    """An ``event`` frame from the order's JSON, serialised once per event and shared by all clients."""
    return f'{{"type":"event","seq":{seq},"version":{version},"order":{order_json}}}'


def now() -> datetime:
    return datetime.now(UTC)


def parse_client_message(text: str) -> str | None:
    """The ``type`` of a client frame, or None when it is not a JSON object with a string type."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


class QueryError(ValueError):
    """A bad ``since`` or ``order`` query parameter (closed with 4400)."""


def parse_since(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise QueryError(f"since must be a non-negative integer stream sequence, got {raw[:40]!r}")
    return int(raw)


def parse_order(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw or len(raw) > ORDER_ID_MAX_LEN or not raw.isprintable():
        raise QueryError(f"order must be 1..{ORDER_ID_MAX_LEN} printable characters")
    return raw
