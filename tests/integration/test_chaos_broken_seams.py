"""Each class of bug that slipped through the verifier before (issue 19) planted, one at a time, in the real
processor, ingest or sync (tests/support/broken_processor.py, tests/support/broken_services.py), and run
through the chaos engine's whole pipeline: every one ends in Fail naming the invariant it breaks, while
the same harness with nothing broken passes the same workload.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fincart_chaos.execution import run_test
from fincart_chaos.local import services
from fincart_chaos.report import Report
from fincart_chaos.spec_io import parse_documents
from fincart_devstack.localstack import Infra, start_infra
from rich.console import Console

SUPPORT = Path(__file__).resolve().parents[1] / "support"
PROCESSOR = SUPPORT / "broken_processor.py"
SERVICES = SUPPORT / "broken_services.py"

# 30 orders x 8 updates, every position shuffled, half the updates tied on updated_at: with 30 winners some
# land on a fee tier boundary, and many ties are won by a webhook that did not arrive last.
SPEC = """apiVersion: chaos.fincart.io/v1alpha1
kind: ChaosTest
metadata: {{name: {name}}}
spec:
  target: {{ingestUrl: http://127.0.0.1}}
  load: {{orders: 30, updatesPerOrder: 8, concurrency: 10, outOfOrderRatio: 1.0, tieRatio: 0.5, seed: 2,
          resumingObservers: 2{load}}}
  settle: {{timeout: {settle}}}
{faults}"""
# a load that keeps events flowing for 6 s, for the resume paths: each resume right after a snapshot while
# events still come meets the snapshot stamped one too far (at 100/s, 2.4 s, a loaded machine's resumers
# connected too seldom to meet it in one CI run)
STEADY = ", rate: 40, resumingObservers: 6"
POISON = ", poisonRatio: 0.2"
NATS_DOWN = """  faults:
    - {name: restart-nats, type: brokerRestart, startAfter: 1s, duration: 8s}
"""


@pytest.fixture(autouse=True)
def four_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINCART_PARTITIONS", "4")


@pytest.fixture(scope="module")
def own_nats(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    """The shared Redis and PostgreSQL with an embedded NATS of this module's own, which a fault may stop."""
    env = {"FINCART_REDIS_URL": infra.redis_url, "FINCART_DATABASE_URL": infra.database_url}
    stack = start_infra(env, workdir=tmp_path_factory.mktemp("own-nats"))
    yield stack
    stack.stop()


def run_chaos(
    infra: Infra,
    logdir: Path,
    *,
    processor: str = "correct",
    ingest: str = "correct",
    sync: str = "correct",
    load: str = "",
    faults: str = "",
    settle: str = "10s",
) -> Report:
    test = parse_documents(SPEC.format(name="seam", load=load, settle=settle, faults=faults))[0]
    with services(
        infra,
        1,
        logdir,
        processor_command=[sys.executable, str(PROCESSOR), processor],
        ingest_command=[sys.executable, str(SERVICES), "ingest", ingest],
        sync_command=[sys.executable, str(SERVICES), "sync", sync],
    ) as (endpoints, targets):
        return asyncio.run(run_test(test, endpoints, targets, console=Console(quiet=True), show_progress=False))


def by_invariant(report: Report) -> dict[str, dict[str, int]]:
    """invariant -> {anomaly message: count}"""
    found: dict[str, dict[str, int]] = {}
    for a in report.anomalies:
        found.setdefault(a.invariant, {})[a.message] = a.count
    return found


def assert_passes(report: Report) -> None:
    assert report.verdict == "Pass", (report.anomalies, report.notes)


def test_the_control_passes_with_ties_resumes_and_read_backs(infra: Infra, tmp_path: Path):
    report = run_chaos(infra, tmp_path, load=STEADY)
    assert_passes(report)
    read_side = next(n for n in report.notes if n.startswith("read side:"))
    assert " 0 events read back" not in read_side and "'after-snapshot'" in read_side


def test_a_tie_won_by_the_later_arrival_fails_i2(infra: Infra, tmp_path: Path):
    found = by_invariant(run_chaos(infra, tmp_path, processor="tie-by-arrival"))
    assert set(found) == {"I2"}, found
    assert found["I2"]["stored last_webhook_id differs from the winning webhook's"] >= 1


def test_a_fee_tier_that_includes_its_bound_fails_i2(infra: Infra, tmp_path: Path):
    found = by_invariant(run_chaos(infra, tmp_path, processor="fee-tier-inclusive"))
    # the events carry the wrong fee as well
    assert set(found) == {"I2", "I6"}, found
    assert found["I2"]["stored shipping_fee differs from the winning webhook's"] >= 1
    assert found["I6"]["events whose content differs from their webhook's"] >= 1


def test_a_stored_column_that_is_not_the_winners_fails_i2(infra: Infra, tmp_path: Path):
    found = by_invariant(run_chaos(infra, tmp_path, processor="total-price-kept"))
    # nothing else: status, fee, the webhook id and the events are right
    assert set(found) == {"I2"} and set(found["I2"]) == {"stored total_price differs from the winning webhook's"}, found


def test_events_for_discarded_webhooks_fail_i6(infra: Infra, tmp_path: Path):
    found = by_invariant(run_chaos(infra, tmp_path, processor="event-per-webhook"))
    assert set(found) == {"I6"}, found
    assert found["I6"]["events for webhooks that were discarded or failed (changed nothing)"] >= 1


def test_events_published_before_the_commit_fail_i6(infra: Infra, tmp_path: Path):
    found = by_invariant(run_chaos(infra, tmp_path, processor="publish-before-commit"))
    assert set(found) == {"I6"}, found
    assert found["I6"]["the read API was older than an event already delivered (published before its commit)"] >= 1


@pytest.fixture
def quick_leases(monkeypatch: pytest.MonkeyPatch) -> str:
    """The restarted processor takes its partitions back once the dead one's leases expire: 4 s here instead
    of 10 (the query bound must stay under the TTL minus the renew interval). The settle deadline returned
    covers that plus a start-up on a loaded machine; the control settles as soon as it has caught up."""
    monkeypatch.setenv("FINCART_LEASE_TTL_S", "4")
    monkeypatch.setenv("FINCART_LEASE_RENEW_S", "1")
    monkeypatch.setenv("FINCART_DB_QUERY_TIMEOUT_S", "2")
    return "30s"


def test_a_crash_between_commit_and_ack_is_recovered(infra: Infra, tmp_path: Path, quick_leases: str):
    assert_passes(run_chaos(infra, tmp_path, processor="crash-after-commit", settle=quick_leases))


def test_no_republish_of_a_redelivered_applied_webhook_fails_i6(infra: Infra, tmp_path: Path, quick_leases: str):
    found = by_invariant(run_chaos(infra, tmp_path, processor="crash-after-commit-no-republish", settle=quick_leases))
    assert set(found) == {"I6"}, found
    assert found["I6"]["applied versions a client never received (gap)"] >= 1


def test_the_control_passes_a_long_nats_outage(own_nats: Infra, tmp_path: Path):
    report = run_chaos(own_nats, tmp_path, faults=NATS_DOWN, load=", rate: 40", settle="30s")
    assert_passes(report)
    [window] = report.fault_windows
    assert window.failed >= 1 and window.retried >= 1  # the outage outlasted the publish timeout: 503s, retries


def test_a_dedupe_mark_set_before_the_puback_fails_i5(own_nats: Infra, tmp_path: Path):
    report = run_chaos(
        own_nats, tmp_path, ingest="mark-before-puback", faults=NATS_DOWN, load=", rate: 40", settle="30s"
    )
    found = by_invariant(report)
    # I2 as well when a lost webhook was its order's newest
    assert set(found) - {"I2"} == {"I5"}, found
    assert found["I5"]["acked webhooks never stored (tolerated: 0)"] >= 1


def test_a_snapshot_stamped_one_too_far_fails_i6(infra: Infra, tmp_path: Path):
    found = by_invariant(run_chaos(infra, tmp_path, sync="snapshot-seq-too-far", load=STEADY))
    # the skipped event shows as a gap, or, when it was its order's last version, as a stale end state
    assert set(found) == {"I6"} and all("a resumed observer" in message for message in found["I6"]), found


def test_get_orders_paging_that_skips_orders_fails_i1(infra: Infra, tmp_path: Path):
    found = by_invariant(run_chaos(infra, tmp_path, sync="cursor-past-the-page"))
    assert set(found) == {"I1"}, found
    assert found["I1"]["GET /orders skipped a stored order"] >= 1


def test_the_control_answers_poison_422(infra: Infra, tmp_path: Path):
    report = run_chaos(infra, tmp_path, load=POISON)
    assert_passes(report)
    assert report.counts.rejected == 48  # 20% of 240 webhooks, each answered 422


def test_an_ingest_that_stops_validating_fails_i7(infra: Infra, tmp_path: Path):
    found = by_invariant(run_chaos(infra, tmp_path, ingest="no-validation", load=POISON))
    assert "I7" in found and set(found) <= {"I3", "I7"}, found
    assert found["I7"]["poison webhooks that break the order contract answered 2xx (ingest must answer 422)"] >= 1


def test_a_processor_that_retries_poison_forever_fails_i3(infra: Infra, tmp_path: Path):
    """Poison reaches the processor through the unvalidating ingest (that part is I7 either way): the real
    processor dead-letters it, the broken one keeps it forever."""
    control = by_invariant(run_chaos(infra, tmp_path / "control", ingest="no-validation", load=POISON))
    assert set(control) == {"I7"}, control
    found = by_invariant(
        run_chaos(infra, tmp_path / "broken", ingest="no-validation", processor="poison-forever", load=POISON)
    )
    # the poison's partition is stuck retrying it: webhooks not yet fetched behind it are never stored either
    # (I1, I2, I5) when the load outran the processor's batches, as on a busy machine
    assert {"I3", "I7"} <= set(found) <= {"I1", "I2", "I3", "I5", "I7"}, found
    assert found["I3"]["poison webhooks accepted but never dead-lettered (stuck or silently dropped)"] >= 1
