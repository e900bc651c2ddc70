"""Long-lived dedupe marks in Redis (Shopify retries for hours; JetStream's window is shorter).

The mark is written only after JetStream acknowledged the webhook, so a failed publish never leaves
a mark that would swallow the retry. Redis is optional: when it fails, JetStream's Nats-Msg-Id
window still dedupes, so errors are counted and logged, never answered as 5xx.

Checks and marks share Redis round trips, one at a time: the first call of a loop turn starts a round trip
for the calls of that turn, one EVALSHA that answers every check (EXISTS) and then sets every mark (SET NX);
the calls made while it is out go together in the next one. A lone request waits no longer than one loop
turn; under load each round trip carries every check and mark of its time, and replaces that many redis-py
calls, most of ingest's Redis cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fincart_ingest.metrics import REDIS_ERRORS

log = logging.getLogger(__name__)


# KEYS: the checked keys, then the marked ones; ARGV: the TTL, the number of checks. 1 where a checked key exists,
# 1 where this call set a mark (SET NX EX). One script: a pipeline of commands costs redis-py ~3x the CPU.
CHECK_AND_MARK = """
local checks = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  if i <= checks then out[i] = redis.call('EXISTS', key)
  else out[i] = redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) and 1 or 0 end
end
return out
"""

# what a call answers when Redis fails: a check "unknown" (publish, JetStream dedupes), a mark "first" (accepted)
CHECK_FALLBACK = False
MARK_FALLBACK = True


class DedupeMarks:
    def __init__(self, client: aioredis.Redis, ttl_seconds: int, prefix: str = "") -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._prefix = f"{prefix}:fincart:webhook:" if prefix else "fincart:webhook:"
        self._script = client.register_script(CHECK_AND_MARK)
        self._checks: list[tuple[str, asyncio.Future[bool]]] = []
        self._marks: list[tuple[str, asyncio.Future[bool]]] = []
        self._sender: asyncio.Task[None] | None = None  # sends round trips while there are calls to send

    # seen and mark queue their call at once and answer a future (no coroutine of their own per webhook)

    def seen(self, webhook_id: str) -> Awaitable[bool]:
        """True when the webhook was accepted before; False when unknown or Redis is unavailable."""
        return self._ask(self._checks, webhook_id)

    def mark(self, webhook_id: str) -> Awaitable[bool]:
        """Remember an acknowledged webhook; True when this call set the mark (SET NX)."""
        return self._ask(self._marks, webhook_id)

    async def ping(self) -> None:
        await self._client.ping()

    def _ask(self, queue: list[tuple[str, asyncio.Future[bool]]], webhook_id: str) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        if self._sender is None:  # a task's first step runs after this loop turn: it takes every call made in it
            self._sender = loop.create_task(self._send())
        future = loop.create_future()
        queue.append((webhook_id, future))
        return future

    async def _send(self) -> None:
        try:
            while self._checks or self._marks:
                checks, marks = self._checks, self._marks
                self._checks, self._marks = [], []
                await self._round_trip(checks, marks)
        finally:
            self._sender = None
            for _, future in self._checks + self._marks:
                future.cancel()  # left only when the sender is cancelled (shutdown): so are their requests
            self._checks, self._marks = [], []

    async def _round_trip(
        self, checks: list[tuple[str, asyncio.Future[bool]]], marks: list[tuple[str, asyncio.Future[bool]]]
    ) -> None:
        batch = checks + marks
        ids = [webhook_id for webhook_id, _ in batch]
        try:
            try:
                found = await self._script(keys=[self._prefix + i for i in ids], args=[self._ttl, len(checks)])
                results = [bool(value) for value in found]
            except (RedisError, OSError) as exc:
                REDIS_ERRORS.inc(len(ids))
                log.warning(
                    "redis check/mark failed, JetStream dedupes instead",
                    extra={"webhook_id": ",".join(ids[:10]), "error": repr(exc)},
                )
                results = [CHECK_FALLBACK] * len(checks) + [MARK_FALLBACK] * len(marks)
            except Exception as exc:  # not Redis failing: each caller raises it, as without batching
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its request may have been cancelled meanwhile
                    future.set_result(result)
        finally:
            for _, future in batch:
                future.cancel()  # no-op once answered; a round trip cancelled at shutdown cancels its callers
