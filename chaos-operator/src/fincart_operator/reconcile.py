"""The ChaosTest state machine, as one pure function.

``decide(owner, spec, status, observed, now, settings)`` looks at the test's status and at what exists in the cluster
(``Observed``: its Jobs, ConfigMaps, the verifier's summary, the fault targets) and returns the actions to take and
the next status. No I/O here: ``kube.py`` lists the children and applies the actions, the unit tests call it directly.

The operator applies the actions first and writes the status after, so the status never claims more than was done;
what must survive a restart before an action (the replicas a scale fault will restore) is written one step earlier.
Creates are idempotent (only for children not observed), so a second decision over the same state adds nothing.

Phases: Pending -> Running (load Job, faults on schedule) -> Verifying (load complete, every fault healed) ->
Completed (Pass) | Failed (Fail, Inconclusive) | Error (invalid spec, a failed Job, a missed deadline) |
Aborted (spec.abort, deletion). Every way out of Running or Verifying heals the faults first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fincart_core.contracts.boundaries import Boundaries, boundary_problems
from fincart_core.contracts.chaostest import (
    TERMINAL_PHASES,
    ChaosTestSpec,
    ChaosTestStatus,
    Condition,
    Fault,
    ProxyFault,
    RunnerCounts,
    StatusCounts,
    StatusFault,
    parse_duration,
)
from fincart_core.contracts.report import FaultRecord, ReportSummary
from pydantic import ValidationError

from fincart_operator import children
from fincart_operator.children import Owner
from fincart_operator.settings import OperatorSettings

# delete the selected pods; their controllers recreate them (brokerNodeLoss: at once, one or all NATS pods)
POD_FAULTS = frozenset({"podKill", "brokerRestart", "brokerNodeLoss"})
# scale the selected workloads to 0 (rescale: to its replicas) and back; a kubelet cannot freeze a container
# without privileges, so pause is scaling to 0 here
SCALE_FAULTS = frozenset({"processorPause", "redisOutage", "pause", "rescale"})
JOB_FAULTS = frozenset({"dbConnectionDrop"})  # a fault Job does it from inside the cluster network
PROXY_FAULTS = frozenset({"network"})  # set and cleared over the fault proxy's HTTP API
MAX_NAME = 63 - len("-verify")  # the longest child suffix; Job names end up in 63-character label values
_RESTORE = re.compile(r"(Deployment|StatefulSet)/([a-z0-9.-]+)=(\d+)")
RESTORE_ANNOTATION = "chaos.fincart.io/restore"
_HELD = re.compile(r"^scaled to (\d+);")


# ---------------------------------------------------------------- what decide() sees and returns


@dataclass(frozen=True)
class JobView:
    name: str
    outcome: Literal["running", "succeeded", "failed"] = "running"
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    message: str = ""


@dataclass(frozen=True)
class Workload:
    kind: Literal["Deployment", "StatefulSet"]
    name: str
    replicas: int
    restore: Restore | None = None  # the RESTORE_ANNOTATION on it: a scale fault holds it at 0


@dataclass(frozen=True)
class Restore:
    """What a scale fault writes on the workload itself before scaling it to 0 (once: a second fault, or an
    operator that crashed in between, keeps the first value), so it can be healed even without the test."""

    replicas: int
    test: str  # namespace/name
    uid: str

    def text(self) -> str:
        return json.dumps({"replicas": self.replicas, "test": self.test, "uid": self.uid}, sort_keys=True)

    @classmethod
    def parse(cls, text: str | None) -> Restore | None:
        try:
            raw = json.loads(text or "")
            return cls(int(raw["replicas"]), str(raw["test"]), str(raw["uid"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Observed:
    """The cluster as the operator saw it just before deciding."""

    finalized: bool = True  # our finalizer is on the ChaosTest (nothing starts before it is)
    deleting: bool = False  # the ChaosTest is being deleted
    jobs: Mapping[str, JobView] = field(default_factory=dict)  # children Jobs by name
    config_maps: frozenset[str] = frozenset()  # children ConfigMaps by name
    report: str | None = None  # the summary JSON in the report ConfigMap
    verify_message: str | None = None  # the verify pod's termination message (the summary JSON)
    pods: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # fault name -> pods its selector matches
    workloads: Mapping[str, tuple[Workload, ...]] = field(default_factory=dict)  # fault name -> workloads


@dataclass(frozen=True)
class Create:
    body: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    kind: Literal["Job", "ConfigMap", "Pod"]
    name: str
    grace_period_s: int | None = None  # 0: a kill -9, not a shutdown


@dataclass(frozen=True)
class Scale:
    kind: Literal["Deployment", "StatefulSet"]
    name: str
    replicas: int


@dataclass(frozen=True)
class Annotate:
    """Set (or, None, remove) one annotation on a workload."""

    kind: Literal["Deployment", "StatefulSet"]
    name: str
    key: str
    value: str | None


@dataclass(frozen=True)
class ProxyCall:
    """A request to the fault proxy's control API: PUT a fault (``body``) or DELETE it (``body`` None)."""

    name: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the ChaosTest (posted after the status is written)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = Create | Delete | Scale | Annotate | ProxyCall | Event


@dataclass
class Decision:
    actions: list[Action]
    status: ChaosTestStatus
    wait_s: float | None  # look again after this long; None: nothing left to do for this test


class InvalidSpec(ValueError):
    """A spec the operator cannot run; the message names the field."""


# ---------------------------------------------------------------- spec checks, schedule, deadlines


def validate(raw: Mapping[str, Any] | None, name: str, boundaries: Boundaries, proxy: bool) -> ChaosTestSpec:
    """The spec model plus what only matters in a cluster (Secrets, selectors, child name lengths, what the
    test may reach: fincart_core.contracts.boundaries, and whether a fault proxy exists for network faults)."""
    try:
        spec = ChaosTestSpec.model_validate(raw or {})
    except ValidationError as exc:
        raise InvalidSpec(
            "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from exc
    problems = []
    if len(name) > MAX_NAME:
        problems.append(f"metadata.name: at most {MAX_NAME} characters (children are named <name>-verify)")
    if spec.target.hmac_secret_ref is None:
        problems.append("spec.target.hmacSecretRef: required in a cluster (the load runners sign webhooks with it)")
    if spec.target.database_url_secret_ref is None:
        problems.append("spec.target.databaseUrlSecretRef: required in a cluster (the verifier reads the database)")
    if spec.target.sync_url and spec.target.sync_token_secret_ref is None:
        problems.append("spec.target.syncTokenSecretRef: required with syncUrl in a cluster (sync needs a read token)")
    for index, fault in enumerate(spec.faults):
        where = f"spec.faults[{index}]"
        if fault.type in PROXY_FAULTS and not proxy:
            problems.append(
                f"{where}.type: network faults need the fault proxy (the chart's chaosProxy.enabled, "
                "which sets FINCART_PROXY_URL)"
            )
        if fault.type not in JOB_FAULTS | PROXY_FAULTS and not fault.selector:
            problems.append(f"{where}.selector: {fault.type} needs a label selector (empty would match every pod)")
        if fault.interval and parse_duration(fault.interval) <= parse_duration(fault.duration):
            problems.append(f"{where}.interval: must be longer than the duration ({fault.duration})")
        if fault.type in JOB_FAULTS and len(children.fault_job_name(name, fault.name, 999)) > 63:
            problems.append(f"{where}.name: too long for the fault Job name <test>-fault-<name>-<n> (63)")
    problems.extend(_scale_conflicts(spec.faults))
    problems += boundary_problems(spec, boundaries)
    if problems:
        raise InvalidSpec("; ".join(problems))
    return spec


def _may_match_the_same(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Two equality selectors select a common object unless they want different values for one label."""
    return all(b.get(key, value) == value for key, value in a.items())


def _may_overlap(a: Fault, b: Fault) -> bool:
    """Whether two faults can be active at once (a repeating one may be at any time while the load runs)."""
    if a.interval or b.interval:
        return True
    start_a, start_b = parse_duration(a.start_after), parse_duration(b.start_after)
    return start_a < start_b + parse_duration(b.duration) and start_b < start_a + parse_duration(a.duration)


def _scale_conflicts(faults: list[Fault]) -> list[str]:
    """Two scale faults on one workload at once: the second would record 0 replicas to restore."""
    scale = [(i, f) for i, f in enumerate(faults) if f.type in SCALE_FAULTS]
    return [
        f"spec.faults[{j}]: {b.name} may scale the same workload as {a.name} while it is held at 0 "
        "(selectors that can match one workload, overlapping windows)"
        for n, (i, a) in enumerate(scale)
        for j, b in scale[n + 1 :]
        if _may_match_the_same(a.selector, b.selector) and _may_overlap(a, b)
    ]


def load_deadline(spec: ChaosTestSpec, settings: OperatorSettings) -> float:
    """Seconds the load may take: configured, or twice the time at the spec's (or an assumed) rate plus startup."""
    if settings.load_deadline_s:
        return settings.load_deadline_s
    load = spec.load
    per_runner = load.orders * load.updates_per_order * (1 + load.duplicate_ratio + load.invalid_signature_ratio)
    per_runner /= load.parallelism
    estimate = per_runner / (load.rate or settings.load_assumed_rate)
    return min(settings.load_deadline_max_s, settings.load_startup_s + 2 * estimate)


def verify_deadline(spec: ChaosTestSpec, settings: OperatorSettings) -> float:
    """The verifier waits up to settle.timeout for the pipeline to drain, then checks."""
    return parse_duration(spec.settle.timeout) + settings.verify_deadline_s


def fault_job_deadline(fault: Fault, settings: OperatorSettings) -> float:
    """A fault Job holds the fault for its duration, then exits."""
    return parse_duration(fault.duration) + settings.fault_job_deadline_s


def occurrence_name(fault: str, n: int) -> str:
    """The status entry of a fault's n-th occurrence (fault names cannot contain '#')."""
    return fault if n == 0 else f"{fault}#{n}"


def _occurrence(entry_name: str) -> tuple[str, int]:
    fault, _, n = entry_name.partition("#")
    return fault, int(n or 0)


def restore_message(targets: tuple[Workload, ...], held: int = 0) -> str:
    """Written before scaling to ``held``, so the replicas to restore survive an operator restart."""
    return f"scaled to {held}; restore " + " ".join(f"{w.kind}/{w.name}={w.replicas}" for w in targets)


def held_replicas(message: str | None) -> int:
    match = _HELD.match(message or "")
    return int(match.group(1)) if match else 0


def proxy_fault_name(test: str, entry_name: str) -> str:
    """The proxy's name of a fault occurrence (its status name holds '#', which a URL path cannot)."""
    fault, n = _occurrence(entry_name)
    return f"{test}-{fault}-{n}"


def proxy_body(fault: Fault) -> dict[str, Any]:
    assert fault.network is not None  # the spec model requires it for type network
    body = ProxyFault(route=fault.network.target.route, **fault.network.model_dump(exclude={"target"}))
    return body.model_dump(mode="json", by_alias=True)


def restore_targets(message: str | None) -> list[Workload]:
    return [Workload(kind, name, int(n)) for kind, name, n in _RESTORE.findall(message or "")]


def fault_windows(faults: list[StatusFault]) -> list[FaultRecord]:
    """The status' fault occurrences as the verifier's coverage check reads them (epoch seconds)."""

    def epoch(text: str | None) -> float | None:
        moment = parse_time(text)
        return moment.timestamp() if moment else None

    return [
        FaultRecord(
            name=f.name,
            type=f.type,
            started_at=epoch(f.started_at),
            healed_at=epoch(f.healed_at),
            result="skipped" if f.result == "scheduled" else f.result,
            message=f.message,
        )
        for f in faults
    ]


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _cleanup_due(spec: ChaosTestSpec, status: ChaosTestStatus) -> datetime | None:
    """When the runner children of a finished test go, or None if they stay (by policy, or already gone)."""
    policy = spec.cleanup.policy
    if policy == "Never" or (policy == "OnSuccess" and status.phase != "Completed"):
        return None
    if any(c.type == "CleanedUp" and c.status == "True" for c in status.conditions):
        return None
    finished = parse_time(status.completion_time)
    return finished + timedelta(seconds=spec.cleanup.ttl_seconds_after_finished) if finished else None


def needs_attention(raw_spec: Mapping[str, Any] | None, raw_status: Mapping[str, Any] | None) -> bool:
    """Whether a ChaosTest still needs the operator: running, or finished with a cleanup to come."""
    status = parse_status(raw_status)
    if status.phase not in TERMINAL_PHASES:
        return True
    try:
        spec = ChaosTestSpec.model_validate(raw_spec or {})
    except ValidationError:
        return False
    return _cleanup_due(spec, status) is not None


def parse_status(raw: Mapping[str, Any] | None) -> ChaosTestStatus:
    """The status as the operator wrote it (keys other tools add are ignored)."""
    known = {f.alias or name for name, f in ChaosTestStatus.model_fields.items()}
    return ChaosTestStatus.model_validate({k: v for k, v in (raw or {}).items() if k in known})


# ---------------------------------------------------------------- decide


def decide(
    owner: Owner,
    raw_spec: Mapping[str, Any] | None,
    status: ChaosTestStatus,
    observed: Observed,
    now: datetime,
    settings: OperatorSettings,
) -> Decision:
    step = _Step(owner, status.model_copy(deep=True), observed, now, settings)
    step.status.observed_generation = owner.generation
    if status.phase in TERMINAL_PHASES:
        return step.after_finish(raw_spec)
    try:
        spec = validate(raw_spec, owner.name, settings.boundaries(owner.namespace), settings.proxy_url is not None)
    except InvalidSpec as exc:
        return step.finish("Error", "InvalidSpec", str(exc))
    if observed.deleting:
        return step.finish("Aborted", "Deleted", "the ChaosTest is being deleted: load stopped, faults healed")
    if spec.abort:
        return step.finish("Aborted", "Aborted", "spec.abort is true: load stopped, faults healed")
    if settings.kill_switch:
        return step.finish(
            "Aborted",
            "KillSwitch",
            "the operator's kill switch (FINCART_KILL_SWITCH) is on: load stopped, faults healed",
        )
    if not observed.finalized:
        return step.poll()  # kopf adds the finalizer first; nothing may start before it is there
    if status.phase == "Pending":
        return step.start(spec)
    if status.phase == "Running":
        return step.running(spec)
    return step.verifying(spec)


@dataclass
class _Step:
    owner: Owner
    status: ChaosTestStatus
    observed: Observed
    now: datetime
    settings: OperatorSettings
    actions: list[Action] = field(default_factory=list)

    # ---- building blocks

    def done(self, wait_s: float | None) -> Decision:
        return Decision(self.actions, self.status, wait_s)

    def poll(self) -> Decision:
        return self.done(self.settings.poll_interval_s)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.actions.append(Event("Warning" if warning else "Normal", reason, message))

    def create(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        existing = self.observed.jobs if body["kind"] == "Job" else self.observed.config_maps
        if name not in existing:
            self.actions.append(Create(body))

    def condition(self, type_: str, status: Literal["True", "False", "Unknown"], reason: str, message: str) -> None:
        for cond in self.status.conditions:
            if cond.type == type_:
                if cond.status != status:
                    cond.last_transition_time = timestamp(self.now)
                cond.status, cond.reason, cond.message = status, reason, message
                return
        self.status.conditions.append(
            Condition(
                type=type_, status=status, reason=reason, message=message, last_transition_time=timestamp(self.now)
            )
        )

    def since(self, text: str | None) -> float:
        start = parse_time(text)
        return (self.now - start).total_seconds() if start else 0.0

    def entry(self, name: str) -> StatusFault | None:
        return next((f for f in self.status.faults if f.name == name), None)

    def record(
        self, entry: StatusFault, result: Literal["injected", "healed", "failed", "skipped"], message: str | None = None
    ) -> None:
        entry.result = result
        if message is not None:
            entry.message = message
        if result == "injected":
            entry.started_at = timestamp(self.now)
        elif entry.started_at:
            entry.healed_at = timestamp(self.now)
        if entry not in self.status.faults:
            self.status.faults.append(entry)
        failed = result == "failed"
        self.event(f"Fault{result.capitalize()}", f"{entry.type} {entry.name}: {entry.message or result}", failed)

    def restore(self, target: Workload) -> None:
        """Scale back, then drop the annotation that kept the replicas on the workload."""
        self.actions.append(Scale(target.kind, target.name, target.replicas))
        self.actions.append(Annotate(target.kind, target.name, RESTORE_ANNOTATION, None))

    def heal_all(self, why: str) -> None:
        """Undo every injected fault from the status alone (works after a restart, on deletion, on abort)."""
        for entry in self.status.faults:
            if entry.result != "injected":
                continue
            if entry.type in SCALE_FAULTS:
                for target in restore_targets(entry.message):
                    self.restore(target)
            elif entry.type in JOB_FAULTS:
                fault, n = _occurrence(entry.name)
                self.actions.append(Delete("Job", children.fault_job_name(self.owner.name, fault, n)))
            elif entry.type in PROXY_FAULTS:
                self.actions.append(ProxyCall(proxy_fault_name(self.owner.name, entry.name)))
            self.record(entry, "healed", f"{entry.message}; healed early ({why})")

    def finish(
        self,
        phase: Literal["Completed", "Failed", "Error", "Aborted"],
        reason: str,
        message: str,
        verdict: Literal["Pass", "Fail", "Inconclusive", "Error"] | None = None,
    ) -> Decision:
        self.heal_all(reason)
        working = [children.load_job_name(self.owner.name)]
        if not (self.observed.verify_message or self.observed.report):  # else the verifier is done (keep its logs)
            working.append(children.verify_job_name(self.owner.name))
        for name in working:
            job = self.observed.jobs.get(name)
            if phase in ("Error", "Aborted") and job is not None and job.outcome == "running":
                self.actions.append(Delete("Job", name))  # stop the load (or a verification that lost its point)
        if self.status.phase == "Running":
            self.condition("LoadComplete", "False", reason, message)
        if self.status.phase == "Verifying" and verdict is None:
            self.condition("Verified", "False", reason, message)
        self.status.phase = phase
        self.status.verdict = verdict or ("Error" if phase == "Error" else None)
        self.status.message = message
        self.status.completion_time = timestamp(self.now)
        self.event(phase if phase != "Error" else reason, message, warning=phase != "Completed")
        return self.poll()  # the next look decides about cleanup

    # ---- phases

    def start(self, spec: ChaosTestSpec) -> Decision:
        self.create(children.spec_config_map(self.owner, spec))
        self.create(children.load_job(self.owner, spec, self.settings, load_deadline(spec, self.settings)))
        runners = spec.load.parallelism
        self.status.phase = "Running"
        self.status.start_time = timestamp(self.now)
        self.status.runners = RunnerCounts(desired=runners)
        self.status.message = f"load: {runners} runner(s), {len(spec.scheduled_faults())} fault(s)"
        self.condition("LoadComplete", "Unknown", "LoadRunning", self.status.message)
        self.event("Running", f"load Job {children.load_job_name(self.owner.name)} started: {self.status.message}")
        return self.poll()

    def running(self, spec: ChaosTestSpec) -> Decision:
        name = children.load_job_name(self.owner.name)
        load = self.observed.jobs.get(name)
        if load is None:
            return self.finish("Error", "LoadJobMissing", f"load Job {name} disappeared")
        self.status.runners = RunnerCounts(
            desired=spec.load.parallelism, active=load.active, succeeded=load.succeeded, failed=load.failed
        )
        if load.outcome == "failed":
            return self.finish("Error", "LoadJobFailed", f"load Job {name} failed: {load.message}".rstrip(": "))
        deadline = load_deadline(spec, self.settings)
        if load.outcome == "running" and self.since(self.status.start_time) > deadline:
            return self.finish("Error", "DeadlineExceeded", f"the load did not finish within {deadline:.0f}s")
        load_done = load.outcome == "succeeded"
        for fault in spec.scheduled_faults():
            failure = self.fault(spec, fault, load_done)
            if failure:
                return self.finish("Error", "DeadlineExceeded", failure)
        if not load_done or any(f.result == "injected" for f in self.status.faults):
            return self.poll()
        self.create(
            children.verify_job(
                self.owner, spec, self.settings, verify_deadline(spec, self.settings), fault_windows(self.status.faults)
            )
        )
        self.status.phase = "Verifying"
        self.status.message = f"load complete; verifying (settle up to {spec.settle.timeout})"
        self.condition("LoadComplete", "True", "LoadJobComplete", f"{spec.load.parallelism} runner(s) done")
        self.condition("Verified", "Unknown", "VerificationRunning", self.status.message)
        self.event("Verifying", f"verification Job {children.verify_job_name(self.owner.name)} started")
        return self.poll()

    def verifying(self, spec: ChaosTestSpec) -> Decision:
        text = self.observed.report or self.observed.verify_message
        if text:
            return self.verdict(text)
        name = children.verify_job_name(self.owner.name)
        job = self.observed.jobs.get(name)
        if job is None:
            return self.finish("Error", "VerifyJobMissing", f"verification Job {name} disappeared")
        if job.outcome != "running":
            return self.finish(
                "Error",
                "VerifyJobFailed",
                f"verification Job {name} {job.outcome} without a summary {job.message}".rstrip(),
            )
        started = next((c.last_transition_time for c in self.status.conditions if c.type == "Verified"), None)
        deadline = verify_deadline(spec, self.settings)
        if self.since(started) > deadline:
            return self.finish("Error", "DeadlineExceeded", f"the verification did not finish within {deadline:.0f}s")
        return self.poll()

    def verdict(self, text: str) -> Decision:
        try:
            summary = ReportSummary.model_validate_json(text)
        except ValidationError as exc:
            return self.finish("Error", "SummaryUnreadable", f"the verification summary is unreadable: {exc}"[:1000])
        if self.observed.report is None:
            self.create(children.report_config_map(self.owner, summary.model_dump_json()))
        counts = summary.counts
        self.status.counts = StatusCounts(**counts.model_dump(include=set(StatusCounts.model_fields)))
        self.status.anomalies = list(summary.anomalies)
        self.status.report_ref = children.report_config_map_name(self.owner.name)
        self.status.bundle = summary.bundle
        violated = ", ".join(f"{a.invariant} x{a.count}" for a in summary.anomalies)
        message = (
            f"{summary.verdict}: sent {counts.sent}, stored {counts.stored}, lost {counts.lost}, "
            f"duplicated {counts.duplicated}"
            + (f"; violated {violated}" if violated else "")
            + (f" ({summary.reason})" if summary.reason else "")
        )
        self.condition("Verified", "True" if summary.verdict == "Pass" else "False", summary.verdict, message)
        phase = {"Pass": "Completed", "Error": "Error"}.get(summary.verdict, "Failed")
        return self.finish(phase, summary.verdict, message, verdict=summary.verdict)  # type: ignore[arg-type]

    def after_finish(self, raw_spec: Mapping[str, Any] | None) -> Decision:
        try:
            spec = ChaosTestSpec.model_validate(raw_spec or {})
        except ValidationError:
            return self.done(None)
        due = _cleanup_due(spec, self.status)
        if due is None:
            return self.done(None)
        if self.now < due:
            return self.done((due - self.now).total_seconds())
        for name in sorted(self.observed.jobs):
            self.actions.append(Delete("Job", name))
        spec_map = children.spec_config_map_name(self.owner.name)
        if spec_map in self.observed.config_maps:
            self.actions.append(Delete("ConfigMap", spec_map))
        message = f"runner Jobs deleted ({spec.cleanup.policy}, {spec.cleanup.ttl_seconds_after_finished}s after)"
        self.condition("CleanedUp", "True", spec.cleanup.policy, message)
        self.event("CleanedUp", message)
        return self.done(None)

    # ---- faults

    def fault(self, spec: ChaosTestSpec, fault: Fault, load_done: bool) -> str | None:
        """Inject, hold and heal the occurrences of one fault; returns a reason to stop the test, if any."""
        if load_done and self.entry(fault.name) is None:  # never started: reported (repeats just stop)
            self.record(StatusFault(name=fault.name, type=fault.type), "skipped", "the load finished before it")
            return None
        first = parse_duration(fault.start_after)
        every = parse_duration(fault.interval) if fault.interval else None
        elapsed = self.since(self.status.start_time)
        for n in range(self.settings.max_fault_repeats if every else 1):
            if first + n * (every or 0) > elapsed:
                break
            name = occurrence_name(fault.name, n)
            entry = self.entry(name)
            if entry is None and load_done:
                break
            if entry is None:
                self.inject(spec, fault, n, StatusFault(name=name, type=fault.type))
            elif entry.result == "injected":
                failure = self.hold_or_heal(fault, n, entry)
                if failure:
                    return failure
        return None

    def inject(self, spec: ChaosTestSpec, fault: Fault, n: int, entry: StatusFault) -> None:
        match = children.selector(fault.selector)
        if fault.type in POD_FAULTS:
            pods = self.observed.pods.get(fault.name, ())
            if not pods:
                return self.record(entry, "failed", f"no pod matches {match}")
            killed = fault.type == "brokerNodeLoss"
            pods = pods[:1] if killed and fault.nodes == "one" else pods
            self.actions.extend(Delete("Pod", pod, grace_period_s=0 if killed else None) for pod in pods)
            how = "killed (grace 0)" if killed else "deleted"
            return self.record(entry, "injected", f"{how} {len(pods)} pod(s): {', '.join(pods[:5])}")
        if fault.type in SCALE_FAULTS:
            found = self.observed.workloads.get(fault.name, ())
            if not found:
                return self.record(entry, "failed", f"no Deployment or StatefulSet matches {match}")
            # a workload already annotated is held at 0 by a fault that was never healed: its count is the real one
            targets = tuple(Workload(w.kind, w.name, w.restore.replicas if w.restore else w.replicas) for w in found)
            for w in found:
                if w.restore is None:
                    restore = Restore(w.replicas, f"{self.owner.namespace}/{self.owner.name}", self.owner.uid)
                    self.actions.append(Annotate(w.kind, w.name, RESTORE_ANNOTATION, restore.text()))
            held = fault.replicas or 0  # rescale: its replicas; the others: 0
            return self.record(entry, "injected", restore_message(targets, held))  # scaled by the next step
        if fault.type in PROXY_FAULTS:
            body = proxy_body(fault)
            self.actions.append(ProxyCall(proxy_fault_name(self.owner.name, entry.name), body))
            return self.record(entry, "injected", f"{body['mode']} on {body['route']} via the fault proxy")
        job = children.fault_job_name(self.owner.name, fault.name, n)
        deadline = fault_job_deadline(fault, self.settings)
        self.create(children.fault_job(self.owner, spec, fault, n, self.settings, deadline))
        return self.record(entry, "injected", f"fault Job {job}")

    def hold_or_heal(self, fault: Fault, n: int, entry: StatusFault) -> str | None:
        over = self.since(entry.started_at) >= parse_duration(fault.duration)
        if fault.type in POD_FAULTS:
            if over:
                self.record(entry, "healed")
        elif fault.type in SCALE_FAULTS:
            seen = {(w.kind, w.name): w.replicas for w in self.observed.workloads.get(fault.name, ())}
            for target in restore_targets(entry.message):
                current = seen.get((target.kind, target.name))  # None: no longer matched (relabelled?)
                if over:
                    self.restore(target)  # restored even if not seen
                elif current not in (held_replicas(entry.message), None):  # held for the whole duration
                    self.actions.append(Scale(target.kind, target.name, held_replicas(entry.message)))
            if over:
                self.record(entry, "healed")
        elif fault.type in PROXY_FAULTS:
            if over:
                self.actions.append(ProxyCall(proxy_fault_name(self.owner.name, entry.name)))
                self.record(entry, "healed")
        else:
            name = children.fault_job_name(self.owner.name, fault.name, n)
            job = self.observed.jobs.get(name)
            if job is None:
                self.record(entry, "failed", f"fault Job {name} disappeared")
            elif job.outcome == "succeeded":
                self.record(entry, "healed")
            elif job.outcome == "failed":
                self.record(entry, "failed", f"fault Job {name} failed: {job.message}".rstrip(": "))
            elif self.since(entry.started_at) > fault_job_deadline(fault, self.settings):
                return f"fault {fault.name}: Job {name} did not finish within its deadline"
        return None


def orphaned_restores(
    workloads: Iterable[tuple[str, Workload]], tests: Mapping[tuple[str, str], tuple[str, str]]
) -> dict[str, list[Action]]:
    """Workloads (namespace, workload) a scale fault left at 0 whose test is gone or finished, by namespace: the
    actions that heal them. ``tests``: (namespace, name) -> (uid, phase) of the ChaosTests that exist. This is how a
    test deleted while the operator was down (its finalizer removed by hand) is still healed."""
    heal: dict[str, list[Action]] = {}
    for namespace, w in workloads:
        if w.restore is None:
            continue
        test_ns, _, name = w.restore.test.partition("/")
        uid, phase = tests.get((test_ns, name), ("", ""))
        if uid == w.restore.uid and phase not in TERMINAL_PHASES:
            continue  # its test is alive: it heals the workload itself
        heal.setdefault(namespace, []).extend(
            [Scale(w.kind, w.name, w.restore.replicas), Annotate(w.kind, w.name, RESTORE_ANNOTATION, None)]
        )
    return heal
