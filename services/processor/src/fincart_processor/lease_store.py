"""The lease and heartbeat tables in PostgreSQL (see ``leases`` for the rules); times are the database's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from fincart_processor.leases import Lease, LeasePlan, plan_leases

# Lease rounds of all replicas run one at a time (the mode conflicts with itself only: batch transactions'
# FOR SHARE on a lease row still run), so each round decides on the table as it is.
LOCK = "LOCK TABLE partition_leases IN SHARE ROW EXCLUSIVE MODE"
HEARTBEAT = """
INSERT INTO processor_replicas (replica, expires_at) VALUES ($1, now() + make_interval(secs => $2))
ON CONFLICT (replica) DO UPDATE SET expires_at = excluded.expires_at
"""
# replicas dead for a long time are forgotten
FORGET = "DELETE FROM processor_replicas WHERE expires_at < now() - interval '1 hour'"
LIVE = "SELECT replica FROM processor_replicas WHERE expires_at > now()"
LEASES = "SELECT partition, owner, token, expires_at FROM partition_leases"
RENEW = """
UPDATE partition_leases SET expires_at = now() + make_interval(secs => $3)
WHERE partition = ANY($1::int[]) AND owner = $2 AND expires_at > now()
RETURNING partition, token
"""
# The token survives every owner: a new owner's is greater than any token a previous owner used. Only a
# free lease, or one of an earlier incarnation of the same replica name (see ``leases``), is taken.
ACQUIRE = """
INSERT INTO partition_leases (partition, owner, token, expires_at)
SELECT p, $2, 1, now() + make_interval(secs => $3) FROM unnest($1::int[]) AS p
ON CONFLICT (partition) DO UPDATE SET owner = excluded.owner, token = partition_leases.token + 1,
    expires_at = excluded.expires_at
WHERE partition_leases.expires_at <= now()
    OR split_part(partition_leases.owner, '/', 1) = split_part(excluded.owner, '/', 1)
RETURNING partition, token
"""
RELEASE = """
UPDATE partition_leases SET expires_at = now() WHERE partition = ANY($1::int[]) AND owner = $2 AND expires_at > now()
"""
LEAVE = "DELETE FROM processor_replicas WHERE replica = $1"
# Inside a batch transaction: the lease row is locked (shared) until commit, so it cannot change owner
# while the batch writes; no row means this replica is no longer the partition's owner.
FENCE = """
SELECT 1 FROM partition_leases WHERE partition = $1 AND owner = $2 AND token = $3 AND expires_at > now() FOR SHARE
"""


class LeaseLost(RuntimeError):
    """The partition's lease is no longer this replica's: the batch is rolled back and not acked."""


@dataclass(frozen=True)
class Fence:
    """This replica's lease of one partition, as a batch transaction checks it."""

    partition: int
    owner: str
    token: int

    async def check(self, conn: asyncpg.Connection) -> None:
        if await conn.fetchval(FENCE, self.partition, self.owner, self.token) is None:
            raise LeaseLost(f"partition {self.partition}: lease token {self.token} of {self.owner} is gone")


@dataclass(frozen=True)
class Round:
    """One lease round's outcome: tokens of the partitions held now, and the extras to hand over."""

    held: dict[int, int]
    release: list[int]


async def lease_round(conn: asyncpg.Connection, partitions: int, me: str, ttl_s: float) -> Round:
    """Heartbeat, then renew, acquire and pick the extras to release, in one transaction."""
    async with conn.transaction():
        await conn.execute(LOCK)
        await conn.execute(HEARTBEAT, me, ttl_s)
        await conn.execute(FORGET)
        live = [r["replica"] for r in await conn.fetch(LIVE)]
        leases = {r["partition"]: Lease(**r) for r in await conn.fetch(LEASES)}
        now = await conn.fetchval("SELECT now()")
        plan: LeasePlan = plan_leases(partitions, leases, live, me, now)
        held = dict(await conn.fetch(RENEW, plan.renew + plan.release, me, ttl_s))
        if plan.acquire:
            held.update(dict(await conn.fetch(ACQUIRE, plan.acquire, me, ttl_s)))
    return Round(held=held, release=[p for p in plan.release if p in held])


async def release(conn: asyncpg.Connection, partitions: Sequence[int], me: str) -> None:
    await conn.execute(RELEASE, list(partitions), me)


async def leave(conn: asyncpg.Connection, partitions: Sequence[int], me: str) -> None:
    """A replica stopping cleanly: its leases are free and it no longer counts as live, at once."""
    async with conn.transaction():
        await release(conn, partitions, me)
        await conn.execute(LEAVE, me)
