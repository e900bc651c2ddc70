"""Dead-lettering: a message that can never be applied is audited ``failed`` with its reason and published,
with its original headers, to the dead-letter subject, so that nothing is dropped silently."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import asyncpg
from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.partition import Topology
from nats.js import JetStreamContext
from pydantic import ValidationError

from fincart_processor import metrics
from fincart_processor.order_store import record_failed

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(self, js: JetStreamContext, pool: asyncpg.Pool, topology: Topology, acquire_timeout: float) -> None:
        self._js, self._pool, self._topology, self._acquire_timeout = js, pool, topology, acquire_timeout

    async def send(
        self,
        data: bytes,
        headers: Mapping[str, str] | None,
        stream_seq: int,
        reason: str,
        kind: str,
        webhook_id: str | None = None,
        order_id: str | None = None,
    ) -> bool:
        """Audit and publish; False when either failed (a transient error: the caller lets the message come
        back). ``kind`` labels the metric: ``invalid`` (not a webhook) or ``rejected`` (the database or the
        domain code refused it). Ids default to what can be read from an unparseable message."""
        webhook_id = webhook_id or (headers or {}).get("Nats-Msg-Id") or f"seq-{stream_seq}"
        try:
            async with self._pool.acquire(timeout=self._acquire_timeout) as conn:
                await record_failed(conn, webhook_id, order_id or _order_id_of(data), reason)
            await self._js.publish(
                self._topology.dlq_subject,
                data,
                headers={**(headers or {}), "Nats-Msg-Id": f"dlq:{webhook_id}", "Fincart-Error": _header_value(reason)},
            )
        except Exception as exc:  # whatever it was, the message comes back and is tried again
            log.warning("dead-lettering failed", extra={"webhook_id": webhook_id, "error": repr(exc)})
            return False
        metrics.WEBHOOKS.labels("failed").inc()
        metrics.DEAD_LETTERS.labels(kind).inc()
        log.error(
            "poison message dead-lettered",
            extra={"webhook_id": webhook_id, "stream_seq": stream_seq, "reason": kind, "error": reason[:500]},
        )
        return True


def _header_value(reason: str) -> str:
    """One line of ASCII (a NATS header value), 200 characters at most."""
    return " ".join(reason.split())[:200].encode("ascii", "backslashreplace").decode("ascii")


def _order_id_of(data: bytes | None) -> str:
    """Best effort: the order id of a message that failed validation (audit_log needs one)."""
    try:
        return str(WebhookMessage.model_validate_json(data or b"").order.get("id", "unknown"))
    except ValidationError:
        return "unknown"
