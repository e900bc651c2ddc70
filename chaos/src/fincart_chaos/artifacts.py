"""How a cluster run's evidence travels through FinCart's own NATS JetStream (no shared volume needed).

Ledgers: each load runner publishes its ledger to the stream ``CHAOS_LEDGERS`` (subject
``chaos.ledger.<run id>.<runner>``): a ``start`` message (where ORDER_EVENTS stood), the entries in
chunks of JSON lines, then an ``end`` message with the count, so the verifier knows a ledger is whole.
Bundles: the verifier puts report.json, report.html and junit.xml into the object store bucket
``chaos-reports`` under ``<run id>/``; ``fincart-chaos fetch-bundle`` gets them back. Names carry
``FINCART_NATS_PREFIX`` like FinCart's other streams; both keep their data for ``RETENTION_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence

from fincart_core.streams import connect
from nats.aio.client import Client as NATS
from nats.js.api import ObjectStoreConfig, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from fincart_chaos.ledger import LedgerEntry, RunnerStart

RETENTION_S = 7 * 24 * 3600
MAX_BYTES = 1 << 30
CHUNK_BYTES = 256 * 1024  # well below the default max_payload of 1 MiB
KIND = "Fincart-Ledger"  # header: start | entries | end


def stream_name(prefix: str) -> str:
    return f"{prefix.upper()}_CHAOS_LEDGERS" if prefix else "CHAOS_LEDGERS"


def subject(prefix: str, run_id: str, runner: int | str) -> str:
    return f"{prefix.lower() + '.' if prefix else ''}chaos.ledger.{run_id or 'local'}.{runner}"


def bucket_name(prefix: str) -> str:
    return f"{prefix.lower()}-chaos-reports" if prefix else "chaos-reports"


@contextlib.asynccontextmanager
async def _nats(url: str) -> AsyncIterator[NATS]:
    nc = await connect(url, "fincart-chaos", max_reconnect_attempts=3)
    try:
        yield nc
    finally:
        await nc.close()


def _chunks(entries: Sequence[LedgerEntry]) -> list[bytes]:
    chunks: list[bytes] = []
    current: list[str] = []
    size = 0
    for entry in entries:
        line = entry.model_dump_json()
        if current and size + len(line) > CHUNK_BYTES:
            chunks.append("\n".join(current).encode())
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        chunks.append("\n".join(current).encode())
    return chunks


async def publish_ledger(url: str, prefix: str, run_id: str, start: RunnerStart, entries: Sequence[LedgerEntry]) -> int:
    """Publish one runner's ledger; returns the number of messages."""
    async with _nats(url) as nc:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=stream_name(prefix),
                subjects=[subject(prefix, "*", "*")],
                storage=StorageType.FILE,
                max_age=RETENTION_S,
                max_bytes=MAX_BYTES,
                description="fincart-chaos runner ledgers",
            )
        )
        to = subject(prefix, run_id, start.runner)
        messages = [
            ("start", start.model_dump_json().encode()),
            *(("entries", chunk) for chunk in _chunks(entries)),
            ("end", json.dumps({"entries": len(entries)}).encode()),
        ]
        for n, (kind, body) in enumerate(messages):
            msg_id = f"ledger-{run_id}-{start.runner}-{n}"  # a publish retried after a lost PubAck is stored once
            await js.publish(to, body, headers={KIND: kind, "Nats-Msg-Id": msg_id}, timeout=10)
        return len(messages)


async def read_ledgers(
    url: str, prefix: str, run_id: str, runners: int, timeout: float = 30.0
) -> tuple[list[LedgerEntry], list[RunnerStart], list[int]]:
    """Every runner's ledger of a run: entries, start lines and the runners whose ledger is missing or cut."""
    entries: dict[int, list[LedgerEntry]] = {}
    starts: list[RunnerStart] = []
    complete: set[int] = set()
    async with _nats(url) as nc:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream_name(prefix))
        except NotFoundError:  # no runner published anything
            return [], [], list(range(runners))
        if info.state.messages:
            sub = await js.subscribe(subject(prefix, run_id, "*"), ordered_consumer=True)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        while len(complete) < runners:
                            msg = await sub.next_msg(timeout=timeout)
                            runner = int(msg.subject.rsplit(".", 1)[1])
                            kind = (msg.headers or {}).get(KIND)
                            if kind == "start":
                                starts.append(RunnerStart.model_validate_json(msg.data))
                            elif kind == "entries":
                                entries.setdefault(runner, []).extend(
                                    LedgerEntry.model_validate_json(line) for line in msg.data.splitlines()
                                )
                            elif kind == "end" and json.loads(msg.data)["entries"] == len(entries.get(runner, [])):
                                complete.add(runner)
            finally:
                await sub.unsubscribe()
    missing = [r for r in range(runners) if r not in complete]
    return [e for r in sorted(complete) for e in entries.get(r, [])], starts, missing


async def put_bundle(url: str, prefix: str, run_id: str, files: dict[str, bytes]) -> str:
    """Store the bundle's files (name -> content); returns where they are, for the status."""
    async with _nats(url) as nc:
        store = await nc.jetstream().create_object_store(
            bucket_name(prefix),
            ObjectStoreConfig(ttl=RETENTION_S, max_bytes=MAX_BYTES, description="fincart-chaos evidence bundles"),
        )
        for name, data in files.items():
            await store.put(f"{run_id}/{name}", data)
    return f"nats object store {bucket_name(prefix)}: {run_id}/ (fincart-chaos fetch-bundle {run_id})"


async def fetch_bundle(url: str, prefix: str, run_id: str, names: Sequence[str]) -> dict[str, bytes]:
    async with _nats(url) as nc:
        store = await nc.jetstream().object_store(bucket_name(prefix))
        return {name: (await store.get(f"{run_id}/{name}")).data or b"" for name in names}
