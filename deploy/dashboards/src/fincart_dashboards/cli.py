"""``fincart-dashboards``: write the Grafana dashboards into the chart (deploy/helm/fincart/dashboards/), or with
``--check`` fail when the files there differ from what the code builds."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from fincart_dashboards import chaos, pipeline

CHART_DASHBOARDS = "deploy/helm/fincart/dashboards"
# file name in the chart (the ConfigMap template reads dashboards/<name>.json) -> builder
DASHBOARDS: dict[str, Callable[[], model.Dashboard]] = {"pipeline": pipeline.build, "chaos": chaos.build}


def render(build: Callable[[], model.Dashboard]) -> str:
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{name}.json": render(build) for name, build in DASHBOARDS.items()}


def drift(folder: Path) -> list[str]:
    """Unified diffs of each file in ``folder`` that is not what the code builds (empty: none)."""
    diffs = []
    for name, text in rendered().items():
        path = folder / name
        current = path.read_text() if path.exists() else ""
        if current != text:
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        current.splitlines(True), text.splitlines(True), str(path), f"{name} (generated)"
                    )
                )
            )
    return diffs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fincart-dashboards", description=__doc__)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(CHART_DASHBOARDS),
        help=f"folder of the dashboard JSON files (default: {CHART_DASHBOARDS})",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the files differ")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"{args.out} is not a folder (run from the repository root or pass --out)")
    if args.check:
        diffs = drift(args.out)
        sys.stdout.write("".join(diffs))
        if diffs:
            print(f"fincart-dashboards: {len(diffs)} file(s) differ; run `uv run fincart-dashboards`", file=sys.stderr)
            raise SystemExit(1)
        return
    for name, text in rendered().items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
