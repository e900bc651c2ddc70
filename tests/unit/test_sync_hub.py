"""Pure logic of the sync service: fan-out hub, query validation, client frames."""

from __future__ import annotations

import json

import pytest
from fincart_sync.hub import Client, Frame, Hub
from fincart_sync.orders_store import CursorError, decode_cursor, encode_cursor
from fincart_sync.protocol import QueryError, event_frame, parse_client_message, parse_order, parse_since


def frame(seq: int, order: str = "o") -> Frame:
    return Frame(seq=seq, order_id=order, text=f"{seq}", stored_at=0.0)


async def test_hub_routes_by_order_and_drops_repeated_seqs():
    hub = Hub()
    everyone, only_a = Client(None, 10), Client("a", 10)
    hub.add(everyone)
    hub.add(only_a)
    assert hub.publish(frame(1, "a")) and hub.publish(frame(2, "b"))
    assert not hub.publish(frame(2, "b"))  # an overlapping re-subscription repeats seqs: dropped
    assert [everyone.queue.get_nowait().seq for _ in range(2)] == [1, 2] and everyone.queue.empty()
    assert only_a.queue.get_nowait().seq == 1 and only_a.queue.empty()
    hub.remove(only_a)
    hub.remove(everyone)
    assert len(hub) == 0 and hub.last_seq == 2


async def test_full_queue_marks_the_client_slow_once():
    overflowed: list[Client] = []
    client = Client(None, 2, on_overflow=overflowed.append)
    hub = Hub()
    hub.add(client)
    for seq in range(1, 6):
        hub.publish(frame(seq))
    assert overflowed == [client] and client.overflowed and client.queue.qsize() == 2


async def test_frames_a_snapshot_or_replay_covers_never_make_a_client_slow():
    """A resume replays up to the stream's last seq S while the hub may still be fanning out a backlog below S:
    those frames are not queued, so only events after S can overflow the queue (the cause of a flaky 4008)."""
    overflowed: list[Client] = []
    client = Client(None, 2, on_overflow=overflowed.append, covered=None)
    hub = Hub()
    hub.add(client)
    for seq in range(1, 4):  # fanned out before the session knew its position: held, not judged
        hub.publish(frame(seq))
    assert client.queue.empty() and not overflowed
    client.cover(5)
    for seq in range(4, 8):  # the backlog up to 5 is what the replay sends
        hub.publish(frame(seq))
    assert [client.queue.get_nowait().seq for _ in range(2)] == [6, 7] and not overflowed
    for seq in range(8, 11):
        hub.publish(frame(seq))
    assert overflowed == [client]  # events it still needs do overflow


def test_frames_offered_before_the_position_is_known_are_judged_by_it():
    client = Client(None, 2, covered=None)
    for seq in (3, 4, 5):
        client.offer(frame(seq))
    client.cover(3)
    assert [client.queue.get_nowait().seq for _ in range(2)] == [4, 5] and not client.overflowed


@pytest.mark.parametrize("raw", ["-1", "abc", "1.5", "", "²", "9" * 20])
def test_bad_since_is_refused(raw):
    with pytest.raises(QueryError, match="since"):
        parse_since(raw)


def test_since_and_order_parse():
    assert parse_since(None) is None and parse_since("0") == 0 and parse_since("42") == 42
    assert parse_order(None) is None and parse_order("order_chaos_test_12345") == "order_chaos_test_12345"
    for bad in ("", "x" * 256, "a\nb"):
        with pytest.raises(QueryError, match="order"):
            parse_order(bad)


def test_frames_and_client_messages():
    text = event_frame(7, '{"version": 3}', 3)
    assert json.loads(text) == {"type": "event", "seq": 7, "version": 3, "order": {"version": 3}}
    assert parse_client_message('{"type": "ping"}') == "ping"
    assert parse_client_message("[1]") is None and parse_client_message("nope") is None


def test_cursor_round_trip_and_garbage():
    from datetime import UTC, datetime
    from uuid import uuid4

    stamp, uid = datetime(2026, 1, 1, tzinfo=UTC), uuid4()
    assert decode_cursor(encode_cursor(stamp, uid)) == (stamp, uid)
    for bad in ("garbage!", "W10", "e30"):
        with pytest.raises(CursorError):
            decode_cursor(bad)
