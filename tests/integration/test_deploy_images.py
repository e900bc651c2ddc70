"""The one Dockerfile, proven without a Docker engine for each of the five images skaffold builds from it: COPY
sources that exist and survive .dockerignore, a package and console script that exist, and the builder's exact
`uv sync` replayed on the build context so the final image's entrypoint link really resolves (and no dev tool ships)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PACKAGES = ["fincart-ingest", "fincart-processor", "fincart-sync", "fincart-chaos", "fincart-operator"]
ENTRYPOINT = "fincart-entrypoint"
UV_SYNC_TIMEOUT_S = 300
# fincart-core's heavy parts are extras ([db], [web]): an image gets them only when its package asks for them
MODULES = {
    "fincart-ingest": {"fastapi": True, "sqlalchemy": False, "alembic": False, "fincart_devstack": False},
    "fincart-processor": {
        "fastapi": True,
        "fincart_core.db.migrate": True,  # also the migration Job's image
        "fincart_devstack": False,
    },
    "fincart-sync": {"fastapi": True, "sqlalchemy": False, "alembic": False, "fincart_devstack": False},
    "fincart-chaos": {"fastapi": False, "starlette": False, "fincart_devstack": True},  # run --local
    "fincart-operator": {
        "fastapi": False,
        "starlette": False,
        "sqlalchemy": False,
        "alembic": False,
        "asyncpg": False,
        "fincart_devstack": False,
    },
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def workspace_members() -> dict[str, dict]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = {}
    for member in root["tool"]["uv"]["workspace"]["members"]:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        members[project["name"]] = {"path": member, **project}
    return members


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def ignored(relpath: str, patterns: list[str]) -> bool:
    """Docker's rule for these patterns: a pattern excludes the path it matches and everything below it."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("!"):
            raise AssertionError("exceptions are not used in .dockerignore (keep it simple)")
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], bare)
            ):
                return True
    return False


def build_context_files() -> list[str]:
    """What `docker build .` sends: the repository's files (tracked or not ignored by git) minus .dockerignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    patterns = dockerignore_patterns()
    return [f for f in listed if (ROOT / f).is_file() and not ignored(f, patterns)]


def test_dockerignore_matcher() -> None:
    patterns = ["**/__pycache__", "tests", "**/*.pyc"]
    assert ignored("libs/x/__pycache__/a.py", patterns)
    assert ignored("tests/unit/test_a.py", patterns)
    assert ignored("a/b.pyc", patterns)
    assert not ignored("services/ingest/src/fincart_ingest/app.py", patterns)


def test_dockerfile_shape() -> None:
    steps = instructions(DOCKERFILE)
    words = [w for w, _ in steps]
    assert "HEALTHCHECK" not in words  # Kubernetes probes do that
    froms = [i for i, w in enumerate(words) if w == "FROM"]
    assert len(froms) == 3, "uv, builder, final"
    final = steps[froms[-1] :]
    user = [a for w, a in final if w == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) >= 1000
    # no build tools in the final image: no uv, no package installs, only the venv from the builder
    final_text = " ".join(a for _, a in final)
    assert "uv " not in final_text and "apt-get" not in final_text and "pip " not in final_text
    assert [a for w, a in final if w == "COPY"] == ["--from=builder /app/.venv /app/.venv"]
    assert [a for w, a in final if w == "ENTRYPOINT"] == [f'["{ENTRYPOINT}"]']
    builder = steps[froms[1] : froms[2]]
    assert ("ARG", "PACKAGE") in builder, "PACKAGE has no default: a build without it must fail"
    (sync,) = [a for w, a in builder if w == "RUN" and "uv sync" in a]
    assert '--frozen --no-dev --no-editable --package "${PACKAGE}"' in sync
    assert f'ln -s "${{PACKAGE}}" /app/.venv/bin/{ENTRYPOINT}' in sync


def test_skaffold_builds_every_package_from_the_one_dockerfile() -> None:
    artifacts = yaml.safe_load((ROOT / "skaffold.yaml").read_text())["build"]["artifacts"]
    assert sorted(a["image"] for a in artifacts) == sorted(PACKAGES)
    for artifact in artifacts:
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == "Dockerfile"
        assert artifact["docker"]["buildArgs"] == {"PACKAGE": artifact["image"]}
    assert sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("**/Dockerfile") if ".venv" not in p.parts) == [
        "Dockerfile"
    ]


def test_copy_sources_exist_and_reach_the_build_context() -> None:
    steps = instructions(DOCKERFILE)
    stages = {a.split()[-1] for w, a in steps if w == "FROM" and " AS " in a.upper()}
    context = build_context_files()
    for word, args in steps:
        if word != "COPY":
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        if "--from=" in args:
            assert re.search(r"--from=(\S+)", args).group(1) in stages, args  # type: ignore[union-attr]
            continue
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile: COPY {source} does not exist"
            assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in context), (
                f"{source} is excluded by .dockerignore"
            )
    for member in workspace_members().values():  # uv needs every member's pyproject.toml to read the workspace
        assert f"{member['path']}/pyproject.toml" in context
    assert "uv.lock" in context and not any(f.startswith(("tests/", ".venv/")) for f in context)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_and_console_script_exist(package: str) -> None:
    members = workspace_members()
    assert package in members, f"{package} is not a uv workspace member"
    assert package in members[package]["scripts"], f"{package} declares no console script {package}"
    assert "fincart-migrate" in members["fincart-core"]["scripts"]  # the migration Job runs it from the image


@pytest.mark.parametrize("package", PACKAGES)
def test_builder_stage_installs_the_entrypoint(package: str, tmp_path: Path) -> None:
    """Replays the builder: the build context in a folder, then the Dockerfile's own `uv sync` line."""
    uv = shutil.which("uv")
    assert uv is not None, "uv is not on PATH (.ci/run installs it)"
    context = tmp_path / "context"
    for rel in build_context_files():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, context / rel)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env.update(UV_PROJECT_ENVIRONMENT=str(venv), UV_LINK_MODE="copy", UV_NO_PROGRESS="1")
    argv = [uv, "sync", "--frozen", "--no-dev", "--no-editable", "--package", package]
    result = subprocess.run(
        [*argv, "--offline"], cwd=context, env=env, capture_output=True, text=True, timeout=UV_SYNC_TIMEOUT_S
    )
    if result.returncode != 0:  # not everything in the local uv cache: let uv download what the lock names
        result = subprocess.run(argv, cwd=context, env=env, capture_output=True, text=True, timeout=UV_SYNC_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert (venv / "bin" / package).exists(), f"{package} not installed by the builder's uv sync"
    (venv / "bin" / ENTRYPOINT).symlink_to(package)  # the builder's `ln -s`, then the link must resolve
    assert (venv / "bin" / ENTRYPOINT).resolve() == (venv / "bin" / package).resolve()
    assert (venv / "bin" / "fincart-migrate").exists()
    for dev_tool in ("pytest", "ruff", "mypy", "fincart-dashboards"):
        assert not (venv / "bin" / dev_tool).exists(), f"dev tool {dev_tool} would ship in the image"
    module, _, func = workspace_members()[package]["scripts"][package].partition(":")
    source = ROOT / workspace_members()[package]["path"] / "src" / Path(*module.split(".")).with_suffix(".py")
    assert source.exists(), f"{module}, the entry point of {package}, is missing"
    load = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"from {module} import {func}; assert callable({func})"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert load.returncode == 0, load.stderr
    for module, present in MODULES[package].items():
        found = subprocess.run(
            [str(venv / "bin" / "python"), "-c", f"import {module}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (found.returncode == 0) == present, f"{package}'s image {'lacks' if present else 'carries'} {module}"
