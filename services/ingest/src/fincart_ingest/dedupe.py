"""Long-lived dedupe marks in Redis (Shopify retries for hours; JetStream's window is shorter).

The mark is written only after JetStream acknowledged the webhook, so a failed publish never leaves
a mark that would swallow the retry. Redis is optional: when it fails, JetStream's Nats-Msg-Id
window still dedupes, so errors are counted and logged, never answered as 5xx.

Checks (and marks) asked for in the same event-loop turn share one Redis round trip: one MGET (one
EVALSHA of SET NX) for all of them. Under load that replaces dozens of redis-py calls and socket
writes, most of ingest's Redis cost, by one; a lone request waits no longer than one loop turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fincart_ingest.metrics import REDIS_ERRORS

log = logging.getLogger(__name__)


# SET NX EX of every key in one command, 1 where this call set it (a pipeline of SETs costs redis-py ~3x the CPU)
SET_NX_MANY = """
local set = {}
for i, key in ipairs(KEYS) do set[i] = redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) and 1 or 0 end
return set
"""


class _Coalesced:
    """``await call(webhook_id)`` -> bool, sending the ids of one loop turn to ``send`` together; when Redis
    fails every waiting call gets ``fallback``."""

    def __init__(self, what: str, send: Callable[[list[str]], Awaitable[list[bool]]], fallback: bool) -> None:
        self._what = what
        self._send = send
        self._fallback = fallback
        self._pending: list[tuple[str, asyncio.Future[bool]]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until each batch is done

    async def __call__(self, webhook_id: str) -> bool:
        if not self._pending:  # a task's first step runs after the current loop turn: it takes every call made in it
            task = asyncio.create_task(self._flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((webhook_id, future))
        return await future

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        ids = [webhook_id for webhook_id, _ in batch]
        try:
            try:
                results = await self._send(ids)
            except (RedisError, OSError) as exc:
                REDIS_ERRORS.inc(len(ids))
                log.warning(
                    "redis %s failed, JetStream dedupes instead",
                    self._what,
                    extra={"webhook_id": ",".join(ids[:10]), "error": repr(exc)},
                )
                results = [self._fallback] * len(ids)
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


class DedupeMarks:
    def __init__(self, client: aioredis.Redis, ttl_seconds: int, prefix: str = "") -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._prefix = f"{prefix}:" if prefix else ""
        # unknown when Redis fails (publish, JetStream dedupes); "first" when marking fails (answer accepted)
        self._check = _Coalesced("check", self._seen_many, fallback=False)
        self._mark = _Coalesced("mark", self._mark_many, fallback=True)
        self._set_nx = client.register_script(SET_NX_MANY)

    def _key(self, webhook_id: str) -> str:
        return f"{self._prefix}fincart:webhook:{webhook_id}"

    async def seen(self, webhook_id: str) -> bool:
        """True when the webhook was accepted before; False when unknown or Redis is unavailable."""
        return await self._check(webhook_id)

    async def mark(self, webhook_id: str) -> bool:
        """Remember an acknowledged webhook; True when this call set the mark (SET NX)."""
        return await self._mark(webhook_id)

    async def ping(self) -> None:
        await self._client.ping()

    async def _seen_many(self, webhook_ids: list[str]) -> list[bool]:
        return [value is not None for value in await self._client.mget([self._key(i) for i in webhook_ids])]

    async def _mark_many(self, webhook_ids: list[str]) -> list[bool]:
        keys = [self._key(webhook_id) for webhook_id in webhook_ids]
        return [bool(done) for done in await self._set_nx(keys=keys, args=[self._ttl])]
