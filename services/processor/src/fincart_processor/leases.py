"""Which partitions a replica should hold, decided without I/O from the lease table, the live replicas and
the database's clock.

Ownership is a lease per partition in PostgreSQL (``partition_leases``: owner, fencing token, expiry). A
replica acquires free or expired leases, renews its own every FINCART_LEASE_RENEW_S for FINCART_LEASE_TTL_S,
and holds at most ceil(partitions / live replicas): when a replica starts, the others release their extras
and it acquires them. A dead replica's leases expire, so its partitions move within TTL + renew interval.
The token goes up on every change of owner and every batch transaction checks it (``lease_store.fence``),
so a replica that lost a lease without noticing can never commit to that partition.

A replica is ``<name>/<incarnation>``: the name is stable across restarts of the same process or pod
(``ownership.replica_id``), the incarnation is new each start. A restarted replica takes over its
predecessor's leases at once (with a new token, so the predecessor could not commit even if it lived on)
instead of waiting for them to expire.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime


def name_of(replica: str) -> str:
    return replica.split("/", 1)[0]


def predecessor(replica: str, me: str) -> bool:
    """An earlier incarnation of ``me`` (dead: a name runs one process at a time)."""
    return replica != me and name_of(replica) == name_of(me)


@dataclass(frozen=True)
class Lease:
    partition: int
    owner: str
    token: int
    expires_at: datetime


@dataclass(frozen=True)
class LeasePlan:
    renew: list[int]  # held and kept
    acquire: list[int]  # free or expired: take them
    release: list[int]  # held beyond this replica's share: hand them over


def plan_leases(
    partitions: int, leases: Mapping[int, Lease], live: Collection[str], me: str, now: datetime
) -> LeasePlan:
    """``leases``: the rows by partition (absent: never leased); ``live``: replicas with a fresh heartbeat.
    Never acquires a partition another replica validly holds (a predecessor of ``me`` is no other replica)."""
    valid = {
        p: lease
        for p, lease in leases.items()
        if lease.expires_at > now and 0 <= p < partitions and not predecessor(lease.owner, me)
    }
    mine = sorted(p for p, lease in valid.items() if lease.owner == me)
    free = [p for p in range(partitions) if p not in valid]
    share = math.ceil(partitions / len({r for r in live if not predecessor(r, me)} | {me}))
    if len(mine) > share:
        return LeasePlan(renew=mine[:share], acquire=[], release=mine[share:])
    return LeasePlan(renew=mine, acquire=free[: share - len(mine)], release=[])
