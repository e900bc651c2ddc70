"""The evidence bundle of a run: ``report.json`` (every report, the worst verdict), ``report.html`` (one
self-contained page) and ``junit.xml``, written together into one directory (``--report-dir``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from fincart_chaos.report import Report
from fincart_chaos.report_html import render_html
from fincart_chaos.report_junit import junit_xml

SEVERITY = ("Pass", "Inconclusive", "Fail", "Error")
FILES = ("report.json", "report.html", "junit.xml")


class RunReport(BaseModel):
    """``report.json``: the worst verdict and one report per ChaosTest."""

    verdict: str
    reports: list[Report]
    tests: list[dict[str, Any]] = Field(default_factory=list)  # the ChaosTests as run (what `shrink` re-runs)


def worst(reports: Sequence[Report]) -> str:
    return max((r.verdict for r in reports), key=SEVERITY.index, default="Error")


def write_bundle(directory: Path, reports: Sequence[Report], tests: Sequence[dict[str, Any]] = ()) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    texts = (
        RunReport(verdict=worst(reports), reports=list(reports), tests=list(tests)).model_dump_json(indent=1),
        render_html(reports),
        junit_xml(reports),
    )
    paths = [directory / name for name in FILES]
    for path, text in zip(paths, texts, strict=True):
        path.write_text(text)
    return paths
