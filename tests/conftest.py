"""Fixtures shared by every test: real NATS JetStream, Redis and PostgreSQL.

URLs come from FINCART_NATS_URL / FINCART_REDIS_URL / FINCART_DATABASE_URL when set and reachable,
else the standard local ports when reachable, else embedded servers started for this session.
Each test gets its own database and its own stream/subject prefix, so runs never collide.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
import redis.asyncio as aioredis
from fincart_core.db.admin import drop_database, ensure_database, with_database
from fincart_core.db.migrate import upgrade
from fincart_core.partition import Topology
from fincart_core.settings import to_asyncpg_url
from fincart_core.streams import delete_streams, ensure_streams
from fincart_devstack.localstack import Infra, start_infra
from nats.js import JetStreamContext


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    stack = start_infra(use_defaults_if_reachable=True, workdir=tmp_path_factory.mktemp("infra"))
    yield stack
    stack.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A short name unique to this test (databases, stream prefixes, Redis keys)."""
    base = "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:24]
    return f"t{uuid.uuid4().hex[:8]}_{base}".rstrip("_")


@pytest.fixture
async def database_url(infra: Infra, unique_name: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test; dropped afterwards."""
    url = with_database(infra.database_url, unique_name)
    await ensure_database(url)
    upgrade(url)
    yield url
    await drop_database(url)


@pytest.fixture
async def topology(infra: Infra, unique_name: str) -> AsyncIterator[Topology]:
    """Stream names and subjects for this test (4 partitions keeps the tests quick); streams deleted after."""
    topo = Topology(partitions=4, prefix=unique_name.replace("_", "-")[:30])
    yield topo
    await delete_streams(infra.nats_url, topo)


@pytest.fixture
async def js(infra: Infra, topology: Topology) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on this test's streams (created)."""
    nc = await nats.connect(infra.nats_url, connect_timeout=5, max_reconnect_attempts=3)
    stream = nc.jetstream()
    await ensure_streams(stream, topology)
    yield stream
    await nc.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's migrated database."""
    conn = await asyncpg.connect(to_asyncpg_url(database_url))
    yield conn
    await conn.close()


@pytest.fixture
async def redis_client(infra: Infra) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(infra.redis_url, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
def service_env(infra: Infra, database_url: str, topology: Topology) -> dict[str, str]:
    """The FINCART_* environment a service under test runs with."""
    return {
        "FINCART_NATS_URL": infra.nats_url,
        "FINCART_REDIS_URL": infra.redis_url,
        "FINCART_DATABASE_URL": database_url,
        "FINCART_PARTITIONS": str(topology.partitions),
        "FINCART_NATS_PREFIX": topology.prefix,
        "FINCART_WEBHOOK_SECRET": "test-secret",
        "FINCART_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder for files a test leaves behind for people (screenshots, reports)."""
    path = Path("test-output") / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path
