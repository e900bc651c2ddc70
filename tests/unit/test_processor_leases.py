"""plan_leases: replicas that follow it, in any order, never hold a partition twice, own every partition
once they have run a few rounds, hold at most ceil(partitions / live replicas) each, and then stay put."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from fincart_processor.leases import Lease, LeasePlan, plan_leases
from hypothesis import given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 12, 1, tzinfo=UTC)
TTL = timedelta(seconds=10)
RENEW = timedelta(seconds=2)


def lease(p: int, owner: str, token: int = 1, expires_at: datetime = NOW + TTL) -> Lease:
    return Lease(p, owner, token, expires_at)


def test_a_lone_replica_takes_every_partition() -> None:
    assert plan_leases(4, {}, [], "a", NOW) == LeasePlan(renew=[], acquire=[0, 1, 2, 3], release=[])


def test_valid_leases_of_others_are_left_alone_and_expired_ones_taken() -> None:
    leases = {0: lease(0, "b"), 1: lease(1, "b", expires_at=NOW), 2: lease(2, "a")}
    assert plan_leases(4, leases, ["a", "b"], "a", NOW) == LeasePlan(renew=[2], acquire=[1], release=[])


def test_extras_are_handed_over_when_a_replica_joins() -> None:
    leases = {p: lease(p, "a") for p in range(4)}
    assert plan_leases(4, leases, ["a", "b"], "a", NOW) == LeasePlan(renew=[0, 1], acquire=[], release=[2, 3])
    assert plan_leases(4, leases, ["a", "b"], "b", NOW) == LeasePlan(renew=[], acquire=[], release=[])


def test_leases_beyond_the_partition_count_are_ignored() -> None:
    assert plan_leases(2, {5: lease(5, "a")}, ["a"], "a", NOW) == LeasePlan(renew=[], acquire=[0, 1], release=[])


class Cluster:
    """The lease table and heartbeats as lease_store keeps them, one lease round at a time."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.now = NOW
        self.leases: dict[int, Lease] = {}
        self.heartbeats: dict[str, datetime] = {}

    def valid_owner(self, p: int) -> str | None:
        held = self.leases.get(p)
        return held.owner if held is not None and held.expires_at > self.now else None

    def round(self, me: str) -> None:
        self.heartbeats[me] = self.now + TTL
        live = [r for r, until in self.heartbeats.items() if until > self.now]
        plan = plan_leases(self.partitions, self.leases, live, me, self.now)
        assert set(plan.renew) | set(plan.release) == {p for p in range(self.partitions) if self.valid_owner(p) == me}
        for p in plan.acquire:
            assert self.valid_owner(p) is None, f"{me} would take {p} from {self.valid_owner(p)}"
            previous = self.leases.get(p)
            self.leases[p] = lease(p, me, (previous.token if previous else 0) + 1, self.now + TTL)
        for p in plan.renew:
            self.leases[p] = lease(p, me, self.leases[p].token, self.now + TTL)
        for p in plan.release:
            self.leases[p] = lease(p, me, self.leases[p].token, self.now)

    def owners(self) -> dict[int, str | None]:
        return {p: self.valid_owner(p) for p in range(self.partitions)}


@settings(max_examples=200, deadline=None)
@given(
    partitions=st.integers(1, 24),
    replicas=st.integers(1, 6),
    data=st.data(),
)
def test_replicas_share_every_partition_once(partitions: int, replicas: int, data: st.DataObject) -> None:
    names = [f"r{i}" for i in range(replicas)]
    cluster = Cluster(partitions)
    alive = list(names)
    dead_at = data.draw(st.integers(0, 6), label="round a replica dies")
    victims = data.draw(st.sets(st.sampled_from(names), max_size=replicas - 1), label="replicas killed")
    tokens: dict[int, int] = {}
    for rnd in range(dead_at + TTL // RENEW + 6):
        if rnd == dead_at:
            alive = [n for n in alive if n not in victims]
        for me in data.draw(st.permutations(alive), label=f"order of round {rnd}"):
            cluster.round(me)
        for p, held in cluster.leases.items():  # a token never goes back
            assert held.token >= tokens.get(p, 0)
            tokens[p] = held.token
        cluster.now += RENEW
    owners = cluster.owners()
    assert set(owners.values()) <= set(alive), "every partition is owned by a live replica"
    share = math.ceil(partitions / len(alive))
    assert all(sum(o == me for o in owners.values()) <= share for me in alive)
    for me in alive:  # settled: another round moves nothing
        cluster.round(me)
    assert cluster.owners() == owners


def test_a_restarted_replica_takes_over_its_predecessors_leases_at_once() -> None:
    leases = {0: lease(0, "host-7-0/old"), 1: lease(1, "other-1-0/x")}
    live = ["host-7-0/old", "other-1-0/x", "host-7-0/new"]
    assert plan_leases(2, leases, live, "host-7-0/new", NOW) == LeasePlan(renew=[], acquire=[0], release=[])
