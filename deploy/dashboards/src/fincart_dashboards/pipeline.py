"""FinCart / Pipeline: what an operator looks at first, top to bottom: is anything stuck (stats), webhooks in
and out, end-to-end latency, backlog and partition owners, then each service's detail. Histogram and
per-second queries read the chart's recording rules (templates/monitoring/prometheusrule.yaml)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import dashboard as model

from fincart_dashboards.panels import (
    DATASOURCE,
    datasource_variable,
    graph,
    instant_table,
    numbered,
    single_stat,
    thresholds,
)

UID = "fincart-pipeline"
PARTITION = 'partition=~"$partition"'


def quantiles(recorded: str) -> tuple[tuple[str, str], tuple[str, str]]:
    return ((f"histogram_quantile(0.5, {recorded})", "p50"), (f"histogram_quantile(0.99, {recorded})", "p99"))


def build() -> model.Dashboard:
    board = (
        dashboard.Dashboard("FinCart / Pipeline")
        .uid(UID)
        .tags(["fincart"])
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .description("Webhooks from ingest through the processor to the WebSocket clients of sync")
        .with_variable(datasource_variable())
        .with_variable(
            dashboard.QueryVariable("partition")
            .label("Partition")
            .datasource(DATASOURCE)
            .query("label_values(fincart_processor_consumer_lag, partition)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.NUMERICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        # -- is anything stuck?
        .with_panel(
            single_stat(
                "Backlog",
                "Webhooks stored in JetStream, not yet delivered to a processor",
                "short",
                "sum(fincart_processor_consumer_lag)",
            ).thresholds(thresholds((None, "green"), (1000, "orange"), (10000, "red")))
        )
        .with_panel(
            single_stat(
                "Processors scraped",
                "Processor replicas Prometheus reaches",
                "short",
                "count(fincart_processor_apply_seconds_count)",
            ).thresholds(thresholds((None, "red"), (1, "green")))
        )
        .with_panel(
            single_stat(
                "Dead letters in range",
                "Unparseable webhooks moved to the dead-letter subject",
                "short",
                "sum(increase(fincart_processor_dead_letters_total[$__range]))",
            ).thresholds(thresholds((None, "green"), (1, "red")))
        )
        .with_panel(
            single_stat("WebSocket clients", "Clients connected to /sync", "short", "sum(fincart_sync_clients)")
        )
        # -- in and out
        .with_panel(
            graph(
                "Webhooks in / applied / discarded / failed per second",
                "In: webhook requests ingest answered (any status). Applied, discarded (not newer than the stored "
                "version) and failed (dead-lettered): the processor's audit results.",
                "ops",
                ("sum(fincart:ingest_requests:rate1m)", "in"),
                ('sum(fincart:processor_webhooks:rate1m{result="processed"})', "applied"),
                ('sum(fincart:processor_webhooks:rate1m{result="discarded"})', "discarded"),
                ('sum(fincart:processor_webhooks:rate1m{result="failed"})', "failed"),
            )
        )
        .with_panel(
            graph(
                "End-to-end latency webhook -> WebSocket",
                "From ingest receiving a webhook to its change event's frame being written to a WebSocket client",
                "s",
                *quantiles("fincart:sync_webhook_to_frame_seconds_bucket:rate5m"),
            ).thresholds(thresholds((None, "green"), (1, "orange"), (5, "red")))
        )
        .with_panel(
            graph(
                "Backlog per partition",
                "Undelivered webhooks of each ORDERS partition (FinCartConsumerLag at 2000)",
                "short",
                (f"max by (partition) (fincart_processor_consumer_lag{{{PARTITION}}})", "{{partition}}"),
            ).thresholds(thresholds((None, "green"), (2000, "red")))
        )
        .with_panel(
            graph(
                "Owners per partition",
                "Processor replicas that hold each partition's lease: 1 is right, 0 is a partition nobody applies "
                "(FinCartPartitionWithoutOwner), more than 1 must never happen",
                "short",
                (f"sum by (partition) (fincart_processor_partition_owned{{{PARTITION}}})", "{{partition}}"),
            ).thresholds(thresholds((None, "red"), (1, "green"), (2, "red")))
        )
        .with_panel(
            instant_table(
                "Partition owners",
                "Which processor pod owns each partition now",
                f"max by (partition, pod) (fincart_processor_partition_owned{{{PARTITION}}}) == 1",
            )
        )
        .with_panel(
            graph(
                "Partition lease changes",
                "Partition leases taken, lost or handed over per 5 minutes: a steady "
                "stream means replicas fight over partitions",
                "short",
                ("sum by (change) (increase(fincart_processor_lease_changes_total[5m]))", "{{change}}"),
            )
        )
        .with_panel(
            graph(
                "Dead letters",
                "Unparseable webhooks dead-lettered per 5 minutes (FinCartDeadLetters)",
                "short",
                ("sum(increase(fincart_processor_dead_letters_total[5m]))", "dead letters"),
            ).thresholds(thresholds((None, "green"), (1, "red")))
        )
        # -- ingest
        .with_panel(
            graph(
                "Ingest answers by HTTP status",
                "200 stored (or duplicate), 4xx refused, 503 no PubAck",
                "reqps",
                ("sum by (status) (fincart:ingest_requests:rate1m)", "{{status}}"),
            )
        )
        .with_panel(
            graph(
                "Ingest publish latency",
                "From publish to JetStream's PubAck",
                "s",
                *quantiles("fincart:ingest_publish_seconds_bucket:rate5m"),
            )
        )
        # -- processor
        .with_panel(
            graph(
                "Apply latency",
                "One batch: transaction, change events and acks",
                "s",
                *quantiles("fincart:processor_apply_seconds_bucket:rate5m"),
            )
        )
        .with_panel(
            graph(
                "Batch size",
                "Messages per applied batch",
                "short",
                ("histogram_quantile(0.5, sum by (le) (rate(fincart_processor_batch_size_bucket[5m])))", "p50"),
                ("histogram_quantile(0.99, sum by (le) (rate(fincart_processor_batch_size_bucket[5m])))", "p99"),
            )
        )
        .with_panel(
            graph(
                "Redeliveries and retries",
                "Messages delivered again, and batch attempts that failed and were retried",
                "ops",
                ("sum(rate(fincart_processor_redeliveries_total[5m]))", "redeliveries"),
                ("sum(rate(fincart_processor_transient_errors_total[5m]))", "batch retries"),
            )
        )
        # -- sync
        .with_panel(
            graph(
                "WebSocket clients and events fanned out",
                "Connected clients; event frames sent per second",
                "short",
                ("sum(fincart_sync_clients)", "clients"),
                ("sum(rate(fincart_sync_events_fanned_out_total[1m]))", "frames/s"),
            )
        )
        .with_panel(
            graph(
                "Sync send lag",
                "From the event's store time in ORDER_EVENTS to its frame on a client",
                "s",
                *quantiles("fincart:sync_send_lag_seconds_bucket:rate5m"),
            )
        )
        .with_panel(
            graph(
                "Resumes and slow-client disconnects",
                "Per 5 minutes: resumed connections (?since=) and clients "
                "closed with 4008 (FinCartSyncSlowClientDisconnects)",
                "short",
                ("sum(increase(fincart_sync_resumes_total[5m]))", "resumes"),
                ("sum(increase(fincart_sync_slow_client_disconnects_total[5m]))", "slow-client disconnects"),
            )
        )
    ).build()
    return numbered(board)
