"""Long-lived dedupe marks in Redis (Shopify retries for hours; JetStream's window is shorter).

The mark is written only after JetStream acknowledged the webhook, so a failed publish never leaves
a mark that would swallow the retry. Redis is optional: when it fails, JetStream's Nats-Msg-Id
window still dedupes, so errors are counted and logged, never answered as 5xx.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from fincart_ingest.metrics import REDIS_ERRORS

log = logging.getLogger(__name__)


class DedupeMarks:
    def __init__(self, client: aioredis.Redis, ttl_seconds: int, prefix: str = "") -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._prefix = f"{prefix}:" if prefix else ""

    def _key(self, webhook_id: str) -> str:
        return f"{self._prefix}fincart:webhook:{webhook_id}"

    async def seen(self, webhook_id: str) -> bool:
        """True when the webhook was accepted before; False when unknown or Redis is unavailable."""
        try:
            return bool(await self._client.exists(self._key(webhook_id)))
        except (RedisError, OSError) as exc:
            self._failed("check", webhook_id, exc)
            return False

    async def mark(self, webhook_id: str) -> bool:
        """Remember an acknowledged webhook; True when this call set the mark (SET NX)."""
        try:
            return bool(await self._client.set(self._key(webhook_id), "1", nx=True, ex=self._ttl))
        except (RedisError, OSError) as exc:
            self._failed("mark", webhook_id, exc)
            return True

    async def ping(self) -> None:
        await self._client.ping()

    def _failed(self, what: str, webhook_id: str, exc: Exception) -> None:
        REDIS_ERRORS.inc()
        log.warning("redis %s failed, JetStream dedupes instead", what,
                    extra={"webhook_id": webhook_id, "error": repr(exc)})
