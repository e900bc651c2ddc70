"""Long-lived dedupe marks in Redis (Shopify retries for hours; JetStream's window is shorter).

The mark is written only after JetStream acknowledged the webhook, so a failed publish never leaves
a mark that would swallow the retry. Redis is optional: when it fails, JetStream's Nats-Msg-Id
window still dedupes, so errors are counted and logged, never answered as 5xx.

Checks and marks asked for in the same event-loop turn share one Redis round trip: one EVALSHA that
answers every check (EXISTS) and then sets every mark (SET NX). Under load that replaces dozens of
redis-py calls and socket writes, most of ingest's Redis cost, by one; a lone request waits no longer
than one loop turn.
"""

from __future__ import annotations

import asyncio
import logging

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
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until each round trip is done

    async def seen(self, webhook_id: str) -> bool:
        """True when the webhook was accepted before; False when unknown or Redis is unavailable."""
        return await self._ask(self._checks, webhook_id)

    async def mark(self, webhook_id: str) -> bool:
        """Remember an acknowledged webhook; True when this call set the mark (SET NX)."""
        return await self._ask(self._marks, webhook_id)

    async def ping(self) -> None:
        await self._client.ping()

    def _ask(self, queue: list[tuple[str, asyncio.Future[bool]]], webhook_id: str) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        if not self._checks and not self._marks:  # a task's first step runs after this loop turn: it takes them all
            task = loop.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future = loop.create_future()
        queue.append((webhook_id, future))
        return future

    async def _flush(self) -> None:
        checks, marks = self._checks, self._marks
        self._checks, self._marks = [], []
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
                future.cancel()  # no-op once answered; a flush cancelled at shutdown cancels its callers
