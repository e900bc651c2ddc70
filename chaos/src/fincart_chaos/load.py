"""The load generator: signed webhooks over keep-alive HTTP with bounded concurrency.

Like Shopify, a valid webhook that gets no 2xx is sent again with backoff, a bounded number of times,
unless the answer is a definite rejection (a 4xx such as 413 from ingest or from the ingress's body limit):
the same request can only get it again; a poison webhook too, until it gets a 2xx or a 4xx. A forged (invalid-signature)
request is sent once: its expected answer is 401. Every attempt that was not final is kept in the ledger
(when, which status), so the report can say what each fault window failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
from fincart_core.signing import sign

from fincart_chaos.ledger import LedgerEntry
from fincart_chaos.workload import Request

FORGED_SECRET = "not-the-shop-secret"
RETRYABLE_4XX = frozenset({408, 429})  # request timeout, too many requests: the same request may succeed later


def definite_rejection(status: int) -> bool:
    """A 4xx that settles the request: it was not stored, and sending it again changes nothing."""
    return 400 <= status < 500 and status not in RETRYABLE_4XX


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 10
    first_backoff_s: float = 0.1
    max_backoff_s: float = 3.0
    request_timeout_s: float = 10.0

    def backoff(self, attempt: int) -> float:
        return min(self.first_backoff_s * 2.0**attempt, self.max_backoff_s)


@dataclass
class LoadStats:
    """Live counters for the progress display."""

    total: int
    started_at: float = field(default_factory=time.monotonic)
    sent: int = 0
    done: int = 0
    acked: int = 0
    rejected: int = 0  # answered with a definite 4xx (forged signatures, poison, bodies over a limit)
    errors: int = 0  # non-2xx or no answer on an attempt that was then retried or given up

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return self.done / elapsed if elapsed > 0 else 0.0


def headers_for(request: Request, body: bytes, secret: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Webhook-Id": request.webhook.webhook_id,
        "X-Shopify-Hmac-Sha256": sign(body, secret if request.signed else FORGED_SECRET),
        "X-Shopify-Topic": "orders/updated",
        "X-Shopify-Shop-Domain": "chaos.myshopify.com",
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }


async def send_one(
    http: aiohttp.ClientSession, request: Request, secret: str, policy: RetryPolicy, stats: LoadStats, runner: int
) -> LedgerEntry:
    body = request.webhook.body()
    attempts = policy.attempts if request.signed else 1
    failures: list[tuple[float, int]] = []
    first_status = status = 0
    answer: str | None = None
    latency_ms = 0.0
    sent_at = time.time()
    for attempt in range(attempts):
        started = time.perf_counter()
        try:
            headers = headers_for(request, body, secret)
            async with http.post("/webhooks/shopify", data=body, headers=headers) as response:
                status = response.status
                if status == 200:
                    answer = (await response.json()).get("status")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            status = 0
        latency_ms = (time.perf_counter() - started) * 1000
        if attempt == 0:
            first_status = status
            stats.sent += 1
        if 200 <= status < 300 or not request.signed or definite_rejection(status):
            break
        failures.append((round(time.time(), 3), status))
        stats.errors += 1
        if attempt + 1 < attempts:
            await asyncio.sleep(policy.backoff(attempt))
    entry = LedgerEntry(
        webhook_id=request.webhook.webhook_id,
        order_id=request.webhook.order_id,
        kind=request.kind,
        runner=runner,
        status=status,
        first_status=first_status,
        answer=answer,
        attempts=attempt + 1,
        sent_at=sent_at,
        done_at=time.time(),
        latency_ms=round(latency_ms, 3),
        failures=failures,
    )
    stats.done += 1
    if entry.acked:
        stats.acked += 1
    elif definite_rejection(status):
        stats.rejected += 1
    return entry


async def run_load(
    requests: Sequence[Request],
    ingest_url: str,
    secret: str,
    *,
    concurrency: int,
    rate: float = 0.0,
    runner: int = 0,
    policy: RetryPolicy | None = None,
    stats: LoadStats | None = None,
    on_progress: Callable[[LoadStats], None] | None = None,
    host: str | None = None,
) -> list[LedgerEntry]:
    """Send ``requests`` in order with at most ``concurrency`` in flight (and at most ``rate`` per second
    when ``rate > 0``); return one ledger entry per request. ``host``: the Host header (an ingress's rule)."""
    policy = policy or RetryPolicy()
    stats = stats or LoadStats(total=len(requests))
    entries: list[LedgerEntry | None] = [None] * len(requests)
    queue = iter(enumerate(requests))
    pace = 1.0 / rate if rate > 0 else 0.0
    next_start = time.monotonic()
    lock = asyncio.Lock()

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal next_start
        for position, request in queue:  # workers share one iterator: starts follow the plan order
            if pace:
                async with lock:
                    wait = next_start - time.monotonic()
                    next_start = max(next_start, time.monotonic()) + pace
                if wait > 0:
                    await asyncio.sleep(wait)
            entries[position] = await send_one(http, request, secret, policy, stats, runner)
            if on_progress:
                on_progress(stats)

    # aiohttp rather than httpx: at hundreds of requests in flight httpx's pool costs more CPU than the server
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=policy.request_timeout_s)
    headers = {"Host": host} if host else None
    async with aiohttp.ClientSession(ingest_url, connector=connector, timeout=timeout, headers=headers) as http:
        await asyncio.gather(*(worker(http) for _ in range(min(concurrency, len(requests)) or 1)))
    return [e for e in entries if e is not None]
