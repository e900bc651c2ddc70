"""Reads and trims a cosmic-ray session (its sqlite file) against a target's toml; stdlib only.

  python mutation/session.py sample mutation/<target>.toml session.sqlite SEED   # keep [ci] sample mutants
  python mutation/session.py report mutation/<target>.toml session.sqlite        # exit 1 on an unexplained survivor

A survivor is explained by a [[survivor]] entry of the toml: the source line it mutates and the line as
mutated (stripped, as cosmic-ray writes it: `@dataclass(frozen=False)`, `x[ -1]`), and why it is equivalent.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import tomllib
from pathlib import Path
from typing import Any


def sample(config: dict[str, Any], db: sqlite3.Connection, seed: str) -> None:
    """Skips all but [ci] sample of the pending mutants, drawn with the seed (the commit: each commit its own)."""
    size = config.get("ci", {}).get("sample")
    pending = [
        job
        for (job,) in db.execute("select job_id from work_items where job_id not in (select job_id from work_results)")
    ]
    if size is None or size >= len(pending):
        return
    keep = set(random.Random(seed).sample(sorted(pending), size))
    db.executemany(
        "insert into work_results (worker_outcome, output, job_id) values ('SKIPPED', 'not in this run''s sample', ?)",
        [(job,) for job in pending if job not in keep],
    )
    db.commit()


def report(config: dict[str, Any], db: sqlite3.Connection) -> int:
    explained = {(s["line"], s["mutant"]) for s in config.get("survivor", [])}
    rows = db.execute(
        "select s.module_path, s.operator_name, s.start_pos_row, r.worker_outcome, r.test_outcome, r.diff"
        " from mutation_specs s left join work_results r using (job_id)"
    ).fetchall()
    lines: dict[str, list[str]] = {}
    run = killed = equivalent = 0
    unexplained, not_run = [], 0
    for module, operator, row, outcome, test_outcome, diff in rows:
        if outcome is None:
            not_run += 1
            continue
        if outcome == "SKIPPED":
            continue
        run += 1
        if test_outcome != "SURVIVED":
            killed += 1  # failed tests, a timeout, or a mutant that cannot even be imported
            continue
        source = lines.setdefault(module, Path(module).read_text().splitlines())[row - 1].strip()
        mutant = next((d[1:].strip() for d in diff.splitlines() if d.startswith("+") and not d.startswith("+++")), "")
        if (source, mutant) in explained:
            equivalent += 1
        else:
            unexplained.append(f"{module}:{row} {operator}\n{diff}")
    score = 100 * killed / (run - equivalent) if run > equivalent else 100.0
    print(
        f"{run} mutants run: {killed} killed, {equivalent + len(unexplained)} survived"
        f" ({equivalent} explained as equivalent); score {score:.1f} % of the non-equivalent ones"
    )
    for survivor in unexplained:
        print(f"SURVIVED, not explained in the toml: {survivor}")
    if not_run:
        print(f"{not_run} mutants were not run")
    return 1 if unexplained or not_run else 0


if __name__ == "__main__":
    command, config_path, db_path, *rest = sys.argv[1:]
    config = tomllib.loads(Path(config_path).read_text())
    with sqlite3.connect(db_path) as db:
        if command == "sample":
            sample(config, db, rest[0])
        else:
            sys.exit(report(config, db))
