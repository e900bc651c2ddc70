"""Fan-out of live events to the connected WebSocket clients, each with a bounded queue.

The hub never waits for a client: a client whose queue is full is marked slow and its session
closes it (4008), so one stuck browser cannot hold back the others or grow memory without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Frame:
    """One event as sent: ``text`` is the serialised frame shared by every client."""

    seq: int
    order_id: str
    text: str
    stored_at: float  # event's store time in the stream (epoch seconds), for the send-lag histogram
    received_at: float | None = None  # when ingest received its webhook (epoch seconds), for the end-to-end one


@dataclass(eq=False)
class Client:
    order: str | None  # only this order's events, or all when None
    queue_size: int
    on_overflow: Callable[[Client], None] = lambda _client: None
    queue: asyncio.Queue[Frame] = field(init=False)
    overflowed: bool = False
    # The stream position its snapshot or replay covers: frames up to it are not queued (the pump would drop
    # them), so a client is slow only when events it still needs pile up, never because the hub was still
    # fanning out a backlog that its resume replays anyway. None: not known yet (frames are held until ``cover``).
    covered: int | None = 0
    _early: list[Frame] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.queue_size)

    def cover(self, seq: int) -> None:
        """Frames up to ``seq`` are sent by the snapshot or replay; those offered before this are judged now.
        The early list is bounded by one stream-info request (the session reads ``seq`` right after registering)."""
        self.covered = seq
        early, self._early = self._early, []
        for frame in early:
            self.offer(frame)

    def offer(self, frame: Frame) -> None:
        if self.overflowed:
            return
        if self.covered is None:
            self._early.append(frame)
            return
        if frame.seq <= self.covered:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed = True
            self.on_overflow(self)


class Hub:
    def __init__(self) -> None:
        self._all: set[Client] = set()
        self._by_order: dict[str, set[Client]] = {}
        self.last_seq = 0  # greatest seq fanned out (monotonic; older seqs are dropped as duplicates)

    def __len__(self) -> int:
        return len(self._all) + sum(len(c) for c in self._by_order.values())

    def add(self, client: Client) -> None:
        if client.order is None:
            self._all.add(client)
        else:
            self._by_order.setdefault(client.order, set()).add(client)

    def remove(self, client: Client) -> None:
        if client.order is None:
            self._all.discard(client)
            return
        watchers = self._by_order.get(client.order)
        if watchers is not None:
            watchers.discard(client)
            if not watchers:
                del self._by_order[client.order]

    def publish(self, frame: Frame) -> bool:
        """Offer ``frame`` to every interested client; False when it is a repeat of a seq already seen
        (the feed re-subscribes from ``last_seq + 1`` after a broker restart and may overlap)."""
        if frame.seq <= self.last_seq:
            return False
        self.last_seq = frame.seq
        for client in tuple(self._all):
            client.offer(frame)
        for client in tuple(self._by_order.get(frame.order_id, ())):
            client.offer(frame)
        return True
