"""Runs a target's tests for each cosmic-ray mutant in a process forked from one that has already imported
the third-party libraries (kubernetes, pydantic, hypothesis, pytest): a mutant then costs its tests, not the
seconds of imports a fresh `python -m pytest` pays on a busy 2-core machine.

  python mutation/forkserver.py serve mutation/<target>.toml   # run.sh, before `cosmic-ray exec`
  python mutation/forkserver.py run PYTEST-ARGS...              # the target's test-command

The server imports the target's test files once, then forgets every module loaded from this checkout (the
code under test, the tests), so each forked run imports them afresh from disk, as cosmic-ray mutated them.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shlex
import signal
import socket
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

SOCKET = "mutation/.forkserver.sock"
# a run still going after this is a mutant that loops: its process dies so the server can take the next one
# (cosmic-ray's own timeout, in the target's toml, only kills the client)
RUN_SECONDS = 50


def _from_checkout(module: object, root: Path, venv: Path) -> bool:
    paths = [
        Path(p).resolve() for p in [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])] if p
    ]
    return any(p.is_relative_to(root) and not p.is_relative_to(venv) for p in paths)


def _third_party_modules(test_files: list[str], root: Path, venv: Path) -> list[str]:
    """The modules, in import order, that importing the test files loads from outside this checkout, learnt in
    a throwaway child: importing the checkout's own modules here would leave their state in the libraries
    (prometheus_client's registry refuses the same metric twice)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        import pytest  # noqa: F401 (it and its plugins are what every run loads first)

        for plugin in entry_points(group="pytest11"):
            plugin.load()
        for path in test_files:
            importlib.import_module(path.removesuffix(".py").replace("/", "."))
        with os.fdopen(write_end, "w") as out:
            json.dump([name for name, module in sys.modules.items() if not _from_checkout(module, root, venv)], out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        names: list[str] = json.load(answer)
    os.waitpid(pid, 0)
    return names


def serve(config: Path) -> None:
    root, venv = Path.cwd().resolve(), Path(sys.prefix).resolve()
    sys.path.insert(0, str(root))
    # a mutant can have the size and mtime second of the original: never let a cached .pyc stand in for it
    sys.dont_write_bytecode = True
    command = shlex.split(tomllib.loads(config.read_text())["cosmic-ray"]["test-command"])
    for name in _third_party_modules([a for a in command if a.endswith(".py")], root, venv):
        with contextlib.suppress(Exception):  # the odd module that cannot be imported by its name alone
            importlib.import_module(name)
    Path(SOCKET).unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(SOCKET)
    listener.listen()
    while True:
        conn, _ = listener.accept()
        with conn:
            message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 2)
            pid = os.fork()
            if pid == 0:
                listener.close()
                os.dup2(fds[0], 1)
                os.dup2(fds[1], 2)
                signal.alarm(RUN_SECONDS)
                import pytest

                code = int(pytest.main(json.loads(message)))
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            for fd in fds:
                os.close(fd)
            _, status = os.waitpid(pid, 0)
            conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())


def run(args: list[str]) -> int:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(SOCKET)
        socket.send_fds(conn, [json.dumps(args).encode()], [1, 2])
        reply = conn.recv(16)
    return int(reply) if reply else 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(Path(sys.argv[2]))
    else:
        sys.exit(run(sys.argv[2:]))
