"""Ingest's dedupe marks against real Redis: concurrent calls share round trips and keep per-webhook answers."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from fincart_devstack.localstack import free_port
from fincart_ingest.dedupe import DedupeMarks
from fincart_ingest.metrics import REDIS_ERRORS

TTL = 86_400


class CountingRedis(aioredis.Redis):
    """Counts MGETs and EVALSHAs: the round trips the marks make."""

    round_trips = 0

    async def mget(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.round_trips += 1
        return await super().mget(*args, **kwargs)

    async def evalsha(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.round_trips += 1
        return await super().evalsha(*args, **kwargs)


async def test_concurrent_checks_and_marks_share_round_trips(infra, unique_name):
    client = CountingRedis.from_url(infra.redis_url, socket_timeout=5)
    marks = DedupeMarks(client, TTL, unique_name)
    try:
        await client.set(f"{unique_name}:fincart:webhook:old", "1")
        ids = ["old", *(f"new-{i}" for i in range(20))]
        assert not await marks.mark("old")  # (the first call also loads the script)
        client.round_trips = 0
        assert await asyncio.gather(*(marks.seen(i) for i in ids)) == [True] + [False] * 20
        # the same id twice in one batch: SET NX lets exactly one of them be first
        assert await asyncio.gather(*(marks.mark(i) for i in [*ids, "new-0"])) == [False] + [True] * 20 + [False]
        assert client.round_trips == 2
        assert await marks.seen("new-7") and not await marks.seen("never")
        assert TTL - 5 < await client.ttl(f"{unique_name}:fincart:webhook:new-7") <= TTL
    finally:
        await client.delete(*(f"{unique_name}:fincart:webhook:{i}" for i in ids))
        await client.aclose()


async def test_a_check_and_a_mark_share_a_round_trip_and_calls_meanwhile_go_in_the_next(infra, unique_name):
    client = CountingRedis.from_url(infra.redis_url, socket_timeout=5)
    marks = DedupeMarks(client, TTL, unique_name)
    ids = ["a", *(f"b{i}" for i in range(5))]
    try:
        await client.set(f"{unique_name}:fincart:webhook:old", "1")
        assert not await marks.mark("old")  # (the first call also loads the script)
        client.round_trips = 0
        first = [marks.seen("old"), marks.mark("a")]  # queued at once: one round trip in the next loop turn
        for _ in range(100):  # bounded: until that round trip is out
            if client.round_trips:
                break
            await asyncio.sleep(0)
        assert client.round_trips == 1
        meanwhile = [marks.seen("a"), *(marks.mark(i) for i in ids[1:])]  # wait for the first to come back
        assert await asyncio.gather(*first) == [True, True]
        assert await asyncio.gather(*meanwhile) == [True] * 6  # "a" was marked by the round trip before
        assert client.round_trips == 2
    finally:
        await client.delete(*(f"{unique_name}:fincart:webhook:{i}" for i in ["old", *ids]))
        await client.aclose()


async def test_redis_down_answers_unknown_and_first_and_counts_each_webhook(unique_name):
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    marks = DedupeMarks(client, TTL, unique_name)
    before = REDIS_ERRORS._value.get()
    try:
        assert await asyncio.gather(*(marks.seen(f"w{i}") for i in range(3))) == [False] * 3
        assert await asyncio.gather(*(marks.mark(f"w{i}") for i in range(3))) == [True] * 3
    finally:
        await client.aclose()
    assert REDIS_ERRORS._value.get() - before == 6
