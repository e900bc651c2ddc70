"""Shrinking a failing ChaosTest: fewer faults, shorter windows, a smaller load, as long as it still fails.

Greedy, like a property-based tester's shrinker: from the failing test (its random schedule drawn into a plain
fault list), try the candidates in order (drop one fault, halve one fault's window, halve the load along one
axis); the first that still fails on one of the invariants the original broke becomes the new test, and the
search starts again from it. It ends when no candidate fails any more, or after ``max_runs`` runs. Every run
is a real run (``run`` is injected: the CLI runs the local stack, the unit tests a model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import yaml
from fincart_core.contracts.chaostest import ChaosTest, parse_duration

from fincart_chaos.report import Report

MIN_WINDOW_S = 0.2


@dataclass
class Shrunk:
    test: ChaosTest
    failing: set[str]  # the invariants the shrunk test still breaks
    runs: int = 0
    steps: list[str] = field(default_factory=list)  # what was removed or reduced, in order


def concrete(test: ChaosTest) -> ChaosTest:
    """The test as it ran: a random schedule becomes the fault list it drew (shrinking then edits that list)."""
    spec = test.spec.model_copy(update={"faults": test.spec.scheduled_faults(), "schedule": None})
    return test.model_copy(update={"spec": spec})


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def candidates(test: ChaosTest) -> Iterator[tuple[str, ChaosTest]]:
    """Smaller tests, most reducing first: one fault fewer, one fault's window halved, half the load."""
    spec = test.spec
    for i, fault in enumerate(spec.faults):
        rest = spec.faults[:i] + spec.faults[i + 1 :]
        yield f"without fault {fault.name}", test.model_copy(update={"spec": spec.model_copy(update={"faults": rest})})
    for i, fault in enumerate(spec.faults):
        window = parse_duration(fault.duration)
        if window / 2 >= MIN_WINDOW_S:
            shorter = fault.model_copy(update={"duration": _ms(window / 2), "interval": None})
            faults = [*spec.faults[:i], shorter, *spec.faults[i + 1 :]]
            yield (
                f"fault {fault.name} for {_ms(window / 2)}",
                test.model_copy(update={"spec": spec.model_copy(update={"faults": faults})}),
            )
    load = spec.load
    for axis in ("orders", "updates_per_order", "parallelism", "concurrency"):
        value = getattr(load, axis)
        if value > 1:
            smaller = load.model_copy(update={axis: value // 2})
            yield (f"{axis} {value // 2}", test.model_copy(update={"spec": spec.model_copy(update={"load": smaller})}))


def violated(report: Report) -> set[str]:
    return {a.invariant for a in report.anomalies}


def shrink(
    test: ChaosTest,
    original: Report,
    run: Callable[[ChaosTest], Report],
    max_runs: int = 20,
    on_step: Callable[[str, Report], None] = lambda _description, _report: None,
) -> Shrunk:
    """``original``: the failing report of ``test``. A candidate is kept when its run fails on one of the
    invariants ``original`` broke (another failure would be a different bug)."""
    target = violated(original)
    result = Shrunk(concrete(test), target)
    progress = True
    while progress and result.runs < max_runs:
        progress = False
        for description, candidate in candidates(result.test):
            if result.runs >= max_runs:
                break
            report = run(candidate)
            result.runs += 1
            on_step(description, report)
            still = violated(report) & target if report.verdict == "Fail" else set()
            if still:
                result.test, result.failing, progress = candidate, still, True
                result.steps.append(description)
                break
    return result


def to_yaml(test: ChaosTest, note: str) -> str:
    """The shrunk test as a ChaosTest document anyone can re-run (``run --local`` or ``kubectl apply``)."""
    document = test.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"})
    document["metadata"] = {"name": f"{test.metadata.name}-shrunk"[:63]}
    body: str = yaml.safe_dump(document, sort_keys=False)
    return "".join(f"# {line}\n" for line in note.splitlines()) + body
