"""The processor's PostgreSQL link blackholed while webhooks flow: the chaos engine's fault proxy (run as
``fincart-chaos proxy``, as ``run --local`` does) drops every packet between a processor process and the real
PostgreSQL without closing anything, and the connections open then stay half-open for good. Every PostgreSQL
wait of the processor must be bounded: once the link is back every published webhook is stored within a
bounded wait, and while it is down the replica gives its partitions up by the time its leases expire, so
that a replica that still reaches the database takes them over."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fincart_chaos.local import FaultProxyProcess, host_port, via_proxy
from fincart_devstack.localstack import Infra, ServiceProcess
from fincart_processor.runner import create_pool

from tests.integration.test_processor_ownership import _equal, _more_than, _shared, _taken_over, processor, send_load
from tests.integration.test_processor_service import (
    WAIT_S,
    _events_complete,
    audit_count,
    check_history,
    settings_for,
    wait_until,
)

ROUTE = "processor-postgres"
# Leases and PostgreSQL bounds scaled down, so that a blackhole longer than all of them keeps the test short.
FAST = {
    "FINCART_LEASE_TTL_S": "4",
    "FINCART_LEASE_RENEW_S": "1",
    "FINCART_DB_QUERY_TIMEOUT_S": "1.5",
    "FINCART_DB_ACQUIRE_TIMEOUT_S": "1.5",
    "FINCART_BATCH_SIZE": "20",
}
HOLE_S = 8.0  # longer than the lease TTL and every PostgreSQL timeout above
ORDERS, UPDATES = 30, 40
GIVE_UP_S = 2.0  # once the other replica holds a partition, the blackholed one must have let it go already


@pytest.fixture
def pg_proxy(infra: Infra, tmp_path: Path) -> Iterator[FaultProxyProcess]:
    proxy = FaultProxyProcess({ROUTE: host_port(infra.database_url)}, tmp_path)
    proxy.start()
    yield proxy
    proxy.stop()


@contextlib.asynccontextmanager
async def blackhole(proxy: FaultProxyProcess) -> AsyncIterator[None]:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        (await http.put("/faults/hole", json={"mode": "blackhole", "route": ROUTE})).raise_for_status()
        try:
            yield
        finally:
            (await http.delete("/faults/hole")).raise_for_status()


def through_proxy(service_env: dict[str, str], proxy: FaultProxyProcess) -> dict[str, str]:
    return {**service_env, "FINCART_DATABASE_URL": via_proxy(service_env["FINCART_DATABASE_URL"], proxy.listen[ROUTE])}


async def metric(replica: ServiceProcess, sample: str) -> float:
    """The sum of the replica's samples whose line starts with ``sample`` (/metrics needs no database)."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{replica.base_url}/metrics")).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample))


async def _none_owned(replica: ServiceProcess) -> bool:
    """The replica believes it holds no partition (its partition_owned gauges)."""
    return await metric(replica, "fincart_processor_partition_owned{") == 0


async def test_every_webhook_is_stored_soon_after_the_link_comes_back(
    infra, topology, js, db, service_env, tmp_path, pg_proxy
):
    replica = processor(through_proxy(service_env, pg_proxy), tmp_path, "processor", **FAST)
    expected: dict[str, tuple] = {}
    load = asyncio.create_task(send_load(js, topology, ORDERS, UPDATES, expected, pause=0.3))  # ~7 s of load
    try:
        replica.start()
        await wait_until(lambda: _more_than(audit_count(db), 100), what="processing under way")
        async with blackhole(pg_proxy):
            await asyncio.sleep(HOLE_S)  # the fault's duration: webhooks keep arriving meanwhile
        healed = time.monotonic()
        await asyncio.wait_for(load, WAIT_S)
        await wait_until(
            lambda: _equal(audit_count(db), ORDERS * UPDATES), what="every webhook stored after the blackhole"
        )
        await wait_until(lambda: _events_complete(js, topology, db), what="every event published")
        print(f"\nevery webhook stored {time.monotonic() - healed:.1f} s after a {HOLE_S:.0f} s blackhole")
        # the lease rounds cut at the leases' expiry are counted
        timeouts = {
            op: await metric(replica, f'fincart_processor_db_timeouts_total{{operation="{op}"}}')
            for op in ("batch", "lease_round")
        }
        print(f"PostgreSQL timeouts: {timeouts}")
        assert timeouts["lease_round"] >= 1, timeouts
    finally:
        load.cancel()
        replica.stop()
    await check_history(db, js, topology, expected)


async def test_a_cut_off_replica_gives_its_partitions_up_to_a_live_one(
    infra, topology, js, db, service_env, tmp_path, pg_proxy
):
    cut = processor(through_proxy(service_env, pg_proxy), tmp_path, "processor-cut", **FAST)
    live = processor(service_env, tmp_path, "processor-live", **FAST)
    expected: dict[str, tuple] = {}
    load = asyncio.create_task(send_load(js, topology, ORDERS, UPDATES, expected, pause=0.3))
    try:
        cut.start()
        live.start()
        await wait_until(lambda: _shared(db, {cut.pid, live.pid}, topology.partitions), what="partitions shared")
        async with blackhole(pg_proxy):
            everything = set(range(topology.partitions))
            await wait_until(
                lambda: _taken_over(db, everything, cut.pid), what="the live replica holds every partition"
            )
            # the cut-off replica stopped believing in its leases by the time they expired
            await wait_until(lambda: _none_owned(cut), timeout=GIVE_UP_S, what="the cut-off replica holds nothing")
            await asyncio.wait_for(load, WAIT_S)
            await wait_until(
                lambda: _equal(audit_count(db), ORDERS * UPDATES), what="every webhook stored by the live one"
            )
        await wait_until(lambda: _shared(db, {cut.pid, live.pid}, topology.partitions), what="the cut-off one back")
        await wait_until(lambda: _events_complete(js, topology, db), what="every event published")
    finally:
        load.cancel()
        cut.stop()
        live.stop()
    await check_history(db, js, topology, expected)


async def test_postgresql_ends_a_session_gone_silent_in_a_transaction(infra, database_url, topology, db):
    """The proxy closes the upstream connection once the client gives up; across a real blackhole PostgreSQL hears
    nothing, so it must end a session that went silent mid-transaction itself, or that session's locks (here a
    lease row, as every batch holds one) would stop the other replicas for good."""
    pool = await create_pool(settings_for(infra, database_url, topology, db_query_timeout_s=1.0))
    try:
        await db.execute(
            "INSERT INTO partition_leases (partition, owner, token, expires_at) VALUES (0, 'a/1', 1, now())"
        )
        conn = await pool.acquire(timeout=WAIT_S)
        pid = conn.get_server_pid()
        await conn.execute("BEGIN")
        await conn.execute("SELECT 1 FROM partition_leases WHERE partition = 0 FOR SHARE")
        # from now on the client says nothing
        await wait_until(lambda: _ended(db, pid), timeout=WAIT_S, what="the silent session ended by PostgreSQL")
        await db.execute("SET lock_timeout = '1s'")
        assert await db.execute("UPDATE partition_leases SET owner = 'b/1' WHERE partition = 0") == "UPDATE 1"
    finally:
        pool.terminate()


async def _ended(db: asyncpg.Connection, pid: int) -> bool:
    return not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
