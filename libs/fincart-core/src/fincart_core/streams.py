"""JetStream set-up: the ORDERS, ORDER_EVENTS and ORDERS_DLQ streams (idempotent)."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from dataclasses import dataclass, replace

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from fincart_core.partition import Topology
from fincart_core.settings import DUPLICATE_WINDOW_S, CommonSettings

log = logging.getLogger(__name__)
_PARTITIONS = re.compile(r"partitions=(\d+)")


@dataclass(frozen=True)
class StreamLimits:
    """Replicas and retention of the three streams (FINCART_STREAM_REPLICAS, FINCART_*_MAX_AGE_SECONDS,
    FINCART_*_MAX_BYTES; -1 bytes: no limit)."""

    replicas: int
    orders_max_age_s: int
    orders_max_bytes: int
    events_max_age_s: int
    events_max_bytes: int
    dlq_max_age_s: int
    dlq_max_bytes: int

    @classmethod
    def from_settings(cls, settings: CommonSettings | None = None) -> StreamLimits:
        """From ``settings``, else from the FINCART_* environment."""
        s = settings or CommonSettings()
        return cls(
            s.stream_replicas,
            s.orders_max_age_seconds,
            s.orders_max_bytes,
            s.events_max_age_seconds,
            s.events_max_bytes,
            s.dlq_max_age_seconds,
            s.dlq_max_bytes,
        )


def stream_configs(topology: Topology, limits: StreamLimits) -> list[StreamConfig]:
    stream = functools.partial(
        StreamConfig,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=limits.replicas,
        retention=RetentionPolicy.LIMITS,
    )

    # one entry per stream, alike in shape: what differs is each stream's retention and what a full stream drops
    return [
        stream(
            name=topology.orders_stream,
            subjects=[topology.webhooks_wildcard],
            # the partition count lives in the description: stream metadata needs nats-server >= 2.10
            description=f"Shopify webhooks by crc32(order id); partitions={topology.partitions}",
            max_age=limits.orders_max_age_s,
            max_bytes=limits.orders_max_bytes,
            # full: refuse new webhooks (ingest answers 503, the shop retries) rather than drop unapplied ones
            discard=DiscardPolicy.NEW,
        ),
        stream(
            name=topology.events_stream,
            subjects=[topology.events_wildcard],
            description="Order change events, one per applied version",
            max_age=limits.events_max_age_s,
            max_bytes=limits.events_max_bytes,
            discard=DiscardPolicy.OLD,
        ),
        stream(
            name=topology.dlq_stream,
            subjects=[topology.dlq_subject],
            description="Webhooks that could not be parsed after max deliveries",
            max_age=limits.dlq_max_age_s,
            max_bytes=limits.dlq_max_bytes,
            discard=DiscardPolicy.OLD,
        ),
    ]


# what ensure_streams brings an existing stream in line with (the rest is fixed at creation)
_UPDATABLE = ("num_replicas", "max_age", "max_bytes", "discard")


class PartitionMismatch(RuntimeError):
    """The stream was created with another partition count; P is fixed per stream."""


async def ensure_streams(js: JetStreamContext, topology: Topology, limits: StreamLimits | None = None) -> None:
    """Create the streams if missing, update replicas and retention of existing ones when they differ;
    refuse to run against a stream partitioned differently. ``limits``: None reads the FINCART_* environment."""
    for config in stream_configs(topology, limits or StreamLimits.from_settings()):
        assert config.name is not None  # stream_configs names every stream
        try:
            info = await js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError as exc:  # lost a creation race with another replica
                if exc.err_code != 10058:  # stream name already in use
                    raise
            continue
        existing = _PARTITIONS.search(info.config.description or "")
        expected = _PARTITIONS.search(config.description or "")
        if expected and existing and existing.group(1) != expected.group(1):
            raise PartitionMismatch(
                f"stream {config.name} has {existing.group(1)} partitions, settings say {expected.group(1)}"
            )
        if any(getattr(info.config, key) != getattr(config, key) for key in _UPDATABLE):
            await js.update_stream(replace(info.config, **{key: getattr(config, key) for key in _UPDATABLE}))


async def delete_streams(url: str, topology: Topology) -> None:
    """Remove a topology's streams (tests and chaos runs clean up after themselves on a shared broker)."""
    nc = await nats.connect(servers=servers(url), connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        for name in (topology.orders_stream, topology.events_stream, topology.dlq_stream):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


def servers(url: str) -> list[str]:
    """FINCART_NATS_URL (comma separated) as nats-py's server list."""
    return [u.strip() for u in url.split(",") if u.strip()]


async def connect(url: str, name: str, **options: object) -> NATS:
    """Connect with bounded reconnects; every FinCart process connects through here. With several servers
    (a cluster) a lost connection moves to another one: a crashed server's socket closes at once, a hung
    or cut-off one (no RST) is found by the pings within ~3 x ping_interval instead of nats-py's 6 minutes.
    Disconnects, reconnects (to which server) and errors are logged; a caller's own callbacks still run."""
    nc = NATS()
    caller_reconnected = options.pop("reconnected_cb", None)

    async def disconnected() -> None:
        log.warning("nats disconnected", extra={"service": name})

    async def reconnected() -> None:
        log.warning("nats reconnected", extra={"service": name, "nats_server": _netloc(nc)})
        if caller_reconnected is not None:
            await caller_reconnected()  # type: ignore[operator]

    async def error(exc: Exception) -> None:
        log.warning("nats error", extra={"service": name, "nats_server": _netloc(nc), "error": repr(exc)})

    defaults: dict[str, object] = {
        "name": name,
        "connect_timeout": 5,
        "max_reconnect_attempts": -1,  # the broker restarting is a fault we ride out, not an exit
        "reconnect_time_wait": 0.5,
        "ping_interval": 2,
        "max_outstanding_pings": 2,
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "error_cb": error,
    }
    defaults.update(options)
    await nc.connect(servers=servers(url), **defaults)  # type: ignore[arg-type]
    return nc


def _netloc(nc: NATS) -> str | None:
    return nc.connected_url.netloc if nc.connected_url else None
