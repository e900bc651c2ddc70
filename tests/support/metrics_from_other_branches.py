"""METRICS FROM OTHER BRANCHES: names the chart's dashboards and alerts already use but whose exporting code is on
another branch (i11-processor: partition ownership by database leases). Until it is merged, the checks that a
metric is exported (tests/integration/test_deploy_chart.py) and that a panel returns data
(tests/integration/test_dashboard_queries.py) accept these, and say so in their output.
Coordinator: empty this dict (or delete the file and its two imports) when merging i11-processor."""

from __future__ import annotations

METRICS_FROM_OTHER_BRANCHES: dict[str, str] = {
    "fincart_processor_partition_owned": "i11-processor: 1 on the replica that owns the partition, else 0",
    "fincart_processor_lease_changes_total": "i11-processor: partition lease changes by {change}",
}
