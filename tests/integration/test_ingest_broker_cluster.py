"""The local 3-node JetStream cluster (fincart_devstack.localstack.NatsCluster) and the streams' replicas and
retention (fincart_core.streams), against real nats-server processes."""

from dataclasses import replace

import nats
from fincart_core.partition import Topology
from fincart_core.settings import CommonSettings
from fincart_core.streams import StreamLimits, connect, ensure_streams
from fincart_devstack.localstack import NatsCluster

LIMITS = StreamLimits.from_settings(CommonSettings(stream_replicas=3))


async def test_cluster_keeps_r3_streams_writable_through_a_node_kill(tmp_path):
    cluster = NatsCluster(tmp_path, 3)
    cluster.start()
    nc = await connect(cluster.url, "test")
    try:
        js = nc.jetstream()
        topology = Topology(2)
        await ensure_streams(js, topology, LIMITS)
        info = await js.stream_info(topology.orders_stream)
        assert info.config.num_replicas == 3 and len(info.cluster.replicas) == 2
        assert info.config.max_age == 7 * 86_400 and info.config.discard == "new"

        victim = cluster.nodes[0]
        victim.kill()  # SIGKILL: 2 of 3 still form a quorum
        for i in range(20):
            ack = await js.publish(topology.webhook_subject(i % 2), b"x", headers={"Nats-Msg-Id": f"m{i}"},
                                   timeout=10)
            assert ack.seq == i + 1
        victim.start()
        cluster.wait_ready()
        assert len({node.meta_leader() for node in cluster.nodes}) == 1
        assert (await js.stream_info(topology.orders_stream)).state.messages == 20
    finally:
        await nc.close()
        cluster.stop()
    assert not any(node.running for node in cluster.nodes)


async def test_existing_streams_get_the_configured_retention(infra, topology):
    """Limits that changed in settings are applied to streams created earlier (replicas stay 1 here)."""
    single = replace(LIMITS, replicas=1)
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    try:
        await ensure_streams(js, topology, single)
        changed = replace(single, events_max_age_s=3 * 86_400, dlq_max_bytes=10_000_000)
        await ensure_streams(js, topology, changed)
        events = (await js.stream_info(topology.events_stream)).config
        dlq = (await js.stream_info(topology.dlq_stream)).config
        assert events.max_age == 3 * 86_400 and dlq.max_bytes == 10_000_000 and dlq.max_age == 30 * 86_400
    finally:
        await nc.close()
