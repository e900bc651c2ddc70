"""The local 3-node JetStream cluster (fincart_devstack.localstack.NatsCluster) and the streams' replicas and
retention (fincart_core.streams), against real nats-server processes."""

import asyncio
from dataclasses import replace

import nats
from fincart_core.partition import Topology
from fincart_core.settings import CommonSettings
from fincart_core.streams import StreamLimits, connect, ensure_streams
from fincart_devstack.localstack import service_env, start_infra

RETRIES = 30
LIMITS = StreamLimits.from_settings(CommonSettings(stream_replicas=3))


async def test_cluster_keeps_r3_streams_writable_through_a_node_kill(infra, tmp_path):
    local = start_infra(
        {"FINCART_REDIS_URL": infra.redis_url, "FINCART_DATABASE_URL": infra.database_url},
        workdir=tmp_path,
        nats_nodes=3,
    )
    cluster = local.nats_cluster
    assert cluster is not None and set(local.embedded) == {"nats-0", "nats-1", "nats-2"}
    assert service_env(local)["FINCART_STREAM_REPLICAS"] == "3" and local.nats_url == cluster.url
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
        for i in range(20):  # as ingest's senders do: retry until acknowledged, Nats-Msg-Id dedupes the retries
            for attempt in range(RETRIES):
                try:
                    await js.publish(topology.webhook_subject(i % 2), b"x", headers={"Nats-Msg-Id": f"m{i}"}, timeout=2)
                    break
                except (nats.errors.Error, TimeoutError):  # what ingest answers 503 for
                    assert attempt + 1 < RETRIES, "no PubAck from the 2 nodes left"
                    await asyncio.sleep(0.5)
        victim.start()
        cluster.wait_ready()
        assert len({node.meta_leader() for node in cluster.nodes}) == 1
        state = (await js.stream_info(topology.orders_stream)).state
        assert state.messages == state.last_seq == 20  # every message once
    finally:
        await nc.close()
        local.stop()
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
