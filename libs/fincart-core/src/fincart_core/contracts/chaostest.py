"""ChaosTest spec (``chaos.fincart.io/v1alpha1``): one format for local runs and for the CRD.

These models are the single source: the CLI validates files with them, the operator validates the
custom resource with them and the CRD's openAPIV3Schema is generated from them.
"""

from __future__ import annotations

import random
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from fincart_core.contracts.report import Anomaly

API_GROUP = "chaos.fincart.io"
API_VERSION = "v1alpha1"
KIND = "ChaosTest"
PLURAL = "chaostests"

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> float:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"`` -> seconds."""
    match = _DURATION.match(text)
    if not text or not match or not any(match.groups()):
        raise ValueError(f"invalid duration {text!r}: use forms like 30s, 5m, 1h30m, 250ms")
    hours, minutes, seconds, millis = (int(g) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


# The constraints come before the validator so that they reach the JSON schema (and the CRD); the pattern is RE2-safe
# (the API server is Go) and with minLength it accepts what parse_duration accepts.
Duration = Annotated[
    str, Field(min_length=1, pattern=r"^(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$"), AfterValidator(_check_duration)
]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class SpecModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretKeyRef(SpecModel):
    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class Target(SpecModel):
    ingest_url: str = Field(min_length=1, description="Base URL of the ingest service (webhooks go here)")
    sync_url: str | None = Field(None, description="Base URL of the sync service (WebSocket observer, I6)")
    host_header: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description="Host header of every request to ingestUrl and syncUrl, for an ingress controller that routes "
        "on it (e.g. the Ingress host, with the controller's Service as the URLs); unset: the URLs' host",
    )
    database_url_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret with the PostgreSQL URL the verifier reads (in-cluster runs)"
    )
    hmac_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret with the webhook HMAC secret the load runners sign with"
    )
    sync_token_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret with sync's read token the verifier reads /sync and /orders with (in-cluster runs)"
    )


PoisonKind = Literal["schema", "calendarEdge"]


class Load(SpecModel):
    orders: int = Field(1, ge=1, le=1_000_000, description="Distinct orders")
    updates_per_order: int = Field(100, ge=1, le=100_000, description="Conflicting webhooks per order")
    concurrency: int = Field(100, ge=1, le=10_000, description="Requests in flight per runner")
    parallelism: int = Field(1, ge=1, le=1_000, description="Load runners (pods in the cluster)")
    rate: float = Field(0, ge=0, description="Requests per second per runner, 0 = as fast as possible")
    duplicate_ratio: Ratio = Field(0.0, description="Share of webhooks sent twice")
    out_of_order_ratio: Ratio = Field(0.3, description="Share of webhooks sent out of updated_at order")
    invalid_signature_ratio: Ratio = Field(0.0, description="Share of extra requests with a bad HMAC")
    seed: int = Field(42, description="Seed of the workload: same seed, same webhooks")
    tie_ratio: Ratio = Field(
        0.1,
        description="Share of updates that share updated_at with the order's previous update (the webhook id "
        "breaks the tie; ids come in random order)",
    )
    poison_ratio: Ratio = Field(
        0.0,
        description="Share of extra signed requests that are valid JSON but an invalid order: each must be "
        "answered 4xx or dead-lettered (a failed audit row), never applied",
    )
    poison_kinds: list[PoisonKind] = Field(
        default_factory=lambda: list[PoisonKind](["schema"]),
        min_length=1,
        description="schema: missing or invalid fields and absurd values; calendarEdge: an updated_at whose UTC "
        "instant lies outside the years 1..9999 (e.g. 0001-01-01T00:00:00+01:00)",
    )
    resuming_observers: int = Field(
        2,
        ge=0,
        le=20,
        description="WebSocket observers that disconnect and resume (from since or a new snapshot) "
        "at random points, compared with the steady observer",
    )


FaultType = Literal[
    "podKill",
    "brokerRestart",
    "dbConnectionDrop",
    "redisOutage",
    "processorPause",
    "network",
    "rescale",
    "pause",
    "brokerNodeLoss",
]
# the connections a network fault can sit on: a service's to a dependency, or the runners' to ingest
NETWORK_UPSTREAMS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"nats", "redis"}),
    "processor": frozenset({"nats", "postgres"}),
    "sync": frozenset({"nats", "postgres"}),
    "runners": frozenset({"ingest"}),
}


class NetworkTarget(SpecModel):
    service: Literal["ingest", "processor", "sync", "runners"] = Field(description="Whose connection")
    upstream: Literal["nats", "postgres", "redis", "ingest"] = Field(description="To what")

    @model_validator(mode="after")
    def _known_route(self) -> NetworkTarget:
        if self.upstream not in NETWORK_UPSTREAMS[self.service]:
            raise ValueError(
                f"{self.service} does not connect to {self.upstream} (choose {sorted(NETWORK_UPSTREAMS[self.service])})"
            )
        return self

    @property
    def route(self) -> str:
        """The fault proxy's route name for this connection (the chart and run --local use the same names)."""
        return f"{self.service}-{self.upstream}"


class NetworkEffect(SpecModel):
    """What the fault proxy does to the connections of a route (the body of its PUT /faults/{name})."""

    mode: Literal["latency", "blackhole", "reset", "bandwidth"] = Field(
        description="latency: delay every chunk; blackhole: connections hang (open ones never recover); "
        "reset: open connections are reset and new ones refused; bandwidth: bytes per second"
    )
    latency: Duration = Field("0s", description="latency mode: added delay per chunk of data")
    jitter: Duration = Field("0s", description="latency mode: the delay varies uniformly by up to this much")
    bytes_per_second: int | None = Field(None, ge=1, description="bandwidth mode: the rate limit")
    probability: Ratio = Field(1.0, description="Share of connections the fault applies to (drawn per connection)")
    direction: Literal["both", "upstream", "downstream"] = Field(
        "both", description="upstream: data towards the dependency; downstream: data back to the service"
    )

    @model_validator(mode="after")
    def _parameters(self) -> NetworkEffect:
        if self.mode == "bandwidth" and self.bytes_per_second is None:
            raise ValueError("bandwidth mode needs bytesPerSecond")
        if self.mode == "latency" and parse_duration(self.latency) == 0:
            raise ValueError("latency mode needs a latency above 0")
        return self


class NetworkFault(NetworkEffect):
    target: NetworkTarget


class ProxyFault(NetworkEffect):
    """A fault as the proxy's control API takes it: the effect and the route (None: every route)."""

    route: str | None = None


class Fault(SpecModel):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    type: FaultType
    selector: dict[str, str] = Field(default_factory=dict, description="Label selector of the target pods")
    start_after: Duration = Field("0s", description="Delay after the load starts")
    duration: Duration = Field("10s", description="How long the fault lasts before it is healed")
    interval: Duration | None = Field(None, description="Repeat the fault this often while the load runs")
    network: NetworkFault | None = Field(None, description="type network: the connection and what happens to it")
    replicas: int | None = Field(None, ge=0, le=64, description="type rescale: processor replicas during the fault")
    nodes: Literal["one", "all"] = Field("one", description="type brokerNodeLoss: kill one NATS node or all")

    @model_validator(mode="after")
    def _type_fields(self) -> Fault:
        if (self.type == "network") != (self.network is not None):
            raise ValueError("network: required for type network, and only for it")
        if (self.type == "rescale") != (self.replicas is not None):
            raise ValueError("replicas: required for type rescale, and only for it")
        return self


MAX_RANDOM_FAULTS = 100  # bounds the status and the report


def _millis(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


class RandomSchedule(SpecModel):
    """Jepsen-style nemesis schedule: the faults are templates, drawn at random with quiet periods in between."""

    seed: int = Field(1, description="Same seed, same schedule")
    span: Duration = Field("30s", description="Faults start within this time after the load starts")
    rate: float = Field(6.0, ge=0.1, le=600, description="Mean faults per minute (exponential gaps)")
    quiet: Duration = Field("2s", description="At least this long without a fault between two faults")
    mix: list[str] = Field(default_factory=list, description="Names of the faults to draw from; empty: all")


class Environment(SpecModel):
    """What run --local starts (in a cluster the chart decides)."""

    nats_nodes: Literal[1, 3] = Field(1, description="JetStream nodes: 3 starts a local cluster")


class Settle(SpecModel):
    timeout: Duration = Field("60s", description="How long to wait for the pipeline to drain")


Invariant = Literal["all", "I1", "I2", "I3", "I4", "I5", "I6", "I7"]


class Verification(SpecModel):
    invariants: list[Invariant] = Field(default_factory=lambda: list[Invariant](["all"]), min_length=1)
    max_lost: int = Field(0, ge=0, description="Lost webhooks tolerated before the verdict is Fail")


class Cleanup(SpecModel):
    policy: Literal["Always", "OnSuccess", "Never"] = "OnSuccess"
    ttl_seconds_after_finished: int = Field(3600, ge=0)


class ChaosTestSpec(SpecModel):
    target: Target
    load: Load = Field(default_factory=Load)
    # names are unique (see below); as a list-map the API server enforces that too
    faults: list[Fault] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    schedule: RandomSchedule | None = Field(
        None, description="A random schedule: draw the faults instead of running them as listed"
    )
    environment: Environment = Field(default_factory=Environment)
    settle: Settle = Field(default_factory=Settle)
    verification: Verification = Field(default_factory=Verification)
    cleanup: Cleanup = Field(default_factory=Cleanup)
    abort: bool = Field(False, description="Set to true to stop the load and heal every fault")

    @model_validator(mode="after")
    def _unique_fault_names(self) -> ChaosTestSpec:
        names = [f.name for f in self.faults]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"faults: duplicate names {dupes}")
        unknown = sorted(set(self.schedule.mix) - set(names)) if self.schedule else []
        if unknown:
            raise ValueError(f"schedule.mix: no fault named {unknown}")
        if self.schedule and not self.faults:
            raise ValueError("schedule: a random schedule draws from spec.faults, which is empty")
        return self

    def scheduled_faults(self) -> list[Fault]:
        """The faults as they run: as listed, or drawn by the random schedule (a pure function of its seed).

        Random: one fault at a time, each a copy of a template from the mix with 50-100 % of its duration,
        then a quiet period plus an exponential gap (mean 60 / rate s); named <template>-<n>; starts within span.
        """
        if self.schedule is None:
            return list(self.faults)
        schedule = self.schedule
        rng = random.Random(schedule.seed)
        pool = [f for f in self.faults if not schedule.mix or f.name in schedule.mix]
        span, quiet = parse_duration(schedule.span), parse_duration(schedule.quiet)
        drawn: list[Fault] = []
        at = rng.expovariate(schedule.rate / 60)
        while at < span and len(drawn) < MAX_RANDOM_FAULTS:
            template = rng.choice(pool)
            duration = parse_duration(template.duration) * rng.uniform(0.5, 1.0)
            drawn.append(
                template.model_copy(
                    update={
                        "name": f"{template.name[:56]}-{len(drawn)}",
                        "start_after": _millis(at),
                        "duration": _millis(duration),
                        "interval": None,
                    }
                )
            )
            at += duration + quiet + rng.expovariate(schedule.rate / 60)
        return drawn

    def enabled_invariants(self) -> set[str]:
        chosen: set[str] = set(self.verification.invariants)
        return {f"I{i}" for i in range(1, 8)} if "all" in chosen else chosen


# Kubernetes metadata: name and namespace are read, the rest (labels, uid, ...) passes through; its model_config
# lines look like the webhook contract's, which keeps unknown Shopify fields for the same reason.
class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    namespace: str | None = None


class ChaosTest(BaseModel):
    """A whole ChaosTest object (what ``kubectl apply`` and ``fincart-chaos run`` read)."""

    model_config = ConfigDict(extra="forbid")

    api_version: Literal["chaos.fincart.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ChaosTest"]
    metadata: Metadata
    spec: ChaosTestSpec
    status: dict[str, Any] | None = None


Phase = Literal["Pending", "Running", "Verifying", "Completed", "Failed", "Error", "Aborted"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Completed", "Failed", "Error", "Aborted"})


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Condition(StatusModel):
    """A Kubernetes-style condition (type Ready, LoadComplete, Verified, ...)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None


# The status subset of report.Counts, in the CRD's camelCase (the CRD's status schema is generated from it): the
# status stays small, the report carries every count.
class StatusCounts(StatusModel):
    sent: int = 0
    acked: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0


class StatusFault(StatusModel):
    """One fault action as the operator ran it (times are RFC 3339)."""

    name: str
    type: str
    started_at: str | None = None
    healed_at: str | None = None
    result: Literal["scheduled", "injected", "healed", "failed", "skipped"] = "scheduled"
    message: str | None = None


class RunnerCounts(StatusModel):
    desired: int = 0
    active: int = 0
    succeeded: int = 0
    failed: int = 0


class ChaosTestStatus(StatusModel):
    """What the operator writes under ``.status`` (the CRD's status schema is generated from this)."""

    phase: Phase = "Pending"
    verdict: Literal["Pass", "Fail", "Inconclusive", "Error"] | None = None
    message: str | None = None
    observed_generation: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    runners: RunnerCounts = Field(default_factory=RunnerCounts)
    faults: list[StatusFault] = Field(default_factory=list)
    counts: StatusCounts = Field(default_factory=StatusCounts)
    anomalies: list[Anomaly] = Field(default_factory=list)
    report_ref: str | None = Field(None, description="ConfigMap holding the full JSON report")
    bundle: str | None = Field(None, description="Where the evidence bundle (report.html, junit.xml, report.json) is")
