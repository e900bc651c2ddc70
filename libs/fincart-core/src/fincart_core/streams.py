"""JetStream set-up: the ORDERS, ORDER_EVENTS and ORDERS_DLQ streams (idempotent)."""

from __future__ import annotations

import contextlib
import re

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from fincart_core.partition import Topology

# JetStream's Nats-Msg-Id window. Redis SET NX is the long (24 h+) dedupe; this window covers
# the ingest retries that happen while Redis is down, and the processor's re-published events.
DUPLICATE_WINDOW_S = 2 * 3600
_PARTITIONS = re.compile(r"partitions=(\d+)")


def stream_configs(topology: Topology) -> list[StreamConfig]:
    common = {"storage": StorageType.FILE, "duplicate_window": DUPLICATE_WINDOW_S}
    return [
        StreamConfig(
            name=topology.orders_stream,
            subjects=[topology.webhooks_wildcard],
            retention=RetentionPolicy.LIMITS,
            # the partition count lives in the description: stream metadata needs nats-server >= 2.10
            description=f"Shopify webhooks by crc32(order id); partitions={topology.partitions}",
            **common,
        ),
        StreamConfig(
            name=topology.events_stream,
            subjects=[topology.events_wildcard],
            retention=RetentionPolicy.LIMITS,
            description="Order change events, one per applied version",
            **common,
        ),
        StreamConfig(
            name=topology.dlq_stream,
            subjects=[topology.dlq_subject],
            retention=RetentionPolicy.LIMITS,
            description="Webhooks that could not be parsed after max deliveries",
            **common,
        ),
    ]


class PartitionMismatch(RuntimeError):
    """The stream was created with another partition count; P is fixed per stream."""


async def ensure_streams(js: JetStreamContext, topology: Topology) -> None:
    """Create the streams if missing; refuse to run against a stream partitioned differently."""
    for config in stream_configs(topology):
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


async def delete_streams(url: str, topology: Topology) -> None:
    """Remove a topology's streams (tests and chaos runs clean up after themselves on a shared broker)."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        for config in stream_configs(topology):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(config.name)
    finally:
        await nc.close()


NATS_PING_INTERVAL_S = 5


async def connect(url: str, name: str, **options: object) -> NATS:
    """Connect with bounded reconnects; every FinCart process connects through here."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    defaults: dict[str, object] = {
        "name": name,
        "connect_timeout": 5,
        "max_reconnect_attempts": -1,  # the broker restarting is a fault we ride out, not an exit
        "reconnect_time_wait": 0.5,
        # a connection that silently stopped answering (a half-open TCP flow) is noticed after 3 unanswered
        # PINGs and reconnected; nats-py's default (2 x 120 s) would stall a consumer for minutes
        "ping_interval": NATS_PING_INTERVAL_S,
        "max_outstanding_pings": 3,
    }
    defaults.update(options)
    return await nats.connect(servers=servers, **defaults)  # type: ignore[arg-type]
