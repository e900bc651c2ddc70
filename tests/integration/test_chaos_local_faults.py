"""The local fault actions on real processes (``sleep`` stands in for a service: what matters is the signal
and the restart): pause freezes any selected service, node loss kills one or all JetStream nodes and starts
them again, and faults that cannot act on this run are recorded as skipped."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from fincart_chaos.faults import LocalTargets, inject_once
from fincart_core.contracts.chaostest import Fault
from fincart_devstack.localstack import ManagedProcess

WAIT_S = 10.0


def sleeper(name: str) -> ManagedProcess:
    process = ManagedProcess(name, [shutil.which("sleep") or "sleep", "60"])
    process.start()
    return process


def state(process: ManagedProcess) -> str:
    """The kernel's process state letter (T: stopped)."""
    return Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def processes() -> list[ManagedProcess]:
    started: list[ManagedProcess] = []
    yield started  # type: ignore[misc]
    for process in started:
        process.kill()


async def test_pause_freezes_the_selected_service_and_resumes_it(processes: list[ManagedProcess]):
    redis, processor = sleeper("redis-server"), sleeper("processor-0")
    processes += [redis, processor]
    targets = LocalTargets(database_url="", services={"redis": [redis], "processor": [processor]})
    fault = Fault(name="freeze", type="pause", selector={"app.kubernetes.io/component": "redis"}, duration="1s")
    held = asyncio.create_task(inject_once(fault, targets))
    await _until(lambda: state(redis) == "T")
    assert state(processor) != "T"  # only the selected one
    record = await asyncio.wait_for(held, WAIT_S)
    assert (record.result, record.message) == ("healed", "SIGSTOP redis-server")
    assert state(redis) != "T" and redis.running


@pytest.mark.parametrize(("nodes", "killed"), [("one", 1), ("all", 3)])
async def test_broker_node_loss_kills_nodes_and_starts_them_again(
    processes: list[ManagedProcess], nodes: str, killed: int
):
    cluster = [sleeper(f"nats-{i}") for i in range(3)]
    processes += cluster
    before = [p.pid for p in cluster]
    targets = LocalTargets(database_url="", nats_nodes=cluster)
    record = await asyncio.wait_for(
        inject_once(Fault(name="loss", type="brokerNodeLoss", nodes=nodes, duration="200ms"), targets), WAIT_S
    )
    assert record.result == "healed" and record.message.endswith("of 3 JetStream node(s)")
    assert [p.pid != pid for p, pid in zip(cluster, before, strict=True)] == [True] * killed + [False] * (3 - killed)
    assert all(p.running for p in cluster)


@pytest.mark.parametrize(
    "fault",
    [
        Fault(
            name="n",
            type="network",
            duration="1s",
            network={"target": {"service": "processor", "upstream": "nats"}, "mode": "reset"},
        ),
        Fault(name="r", type="rescale", replicas=3, duration="1s"),
        Fault(name="b", type="brokerNodeLoss", duration="1s"),
    ],
)
async def test_faults_this_run_cannot_do_are_recorded_as_skipped(fault: Fault):
    record = await inject_once(fault, LocalTargets(database_url=""))
    assert record.result == "skipped" and record.message, record


async def _until(check) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(WAIT_S / 0.02)):  # /proc has no event to wait for: poll, bounded
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {WAIT_S}s")
