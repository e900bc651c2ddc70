"""Runs a target's tests for each cosmic-ray mutant in a process forked from one that has already imported
the third-party libraries (kubernetes, pydantic, hypothesis, pytest): a mutant then costs its tests, not the
seconds of imports a fresh `python -m pytest` pays on a busy 2-core machine.

  python mutation/forkserver.py serve mutation/<target>.toml   # run.sh, before `cosmic-ray exec`
  python mutation/forkserver.py run PYTEST-ARGS...              # the target's test-command

The server runs the tests once, unmutated, and imports in itself every library that run needed, but none of
the modules of this checkout (the code under test, the tests): each forked run imports those afresh from
disk, as cosmic-ray mutated them.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import shlex
import signal
import socket
import sys
import tomllib
from pathlib import Path

SOCKET = "mutation/.forkserver.sock"
# a run still going after this is a mutant that loops: it dies before cosmic-ray's timeout (the target's toml)
# kills the client; the test commands turn pytest-timeout off, whose own alarm would replace this one
RUN_SECONDS = 50


def _from_checkout(module: object, root: Path, venv: Path) -> bool:
    paths = [
        Path(p).resolve() for p in [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])] if p
    ]
    return any(p.is_relative_to(root) and not p.is_relative_to(venv) for p in paths)


def _baseline(args: list[str], root: Path, venv: Path) -> list[str]:
    """Runs the tests once, unmutated, in a throwaway child (they must pass, or every mutant would count as
    killed) and returns the modules, in import order, it loaded from outside this checkout. The checkout's own
    modules are never imported here: they would leave their state in the libraries (prometheus_client's
    registry refuses the same metric twice)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        import pytest

        code = int(pytest.main(args))
        with os.fdopen(write_end, "w") as out:
            json.dump([name for name, module in sys.modules.items() if not _from_checkout(module, root, venv)], out)
        sys.stdout.flush()
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        names: list[str] = json.load(answer)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit("the tests fail without any mutant")
    return names


def serve(config: Path) -> None:
    root, venv = Path.cwd().resolve(), Path(sys.prefix).resolve()
    sys.path.insert(0, str(root))
    # a mutant can have the size and mtime second of the original: never let a cached .pyc stand in for it
    sys.dont_write_bytecode = True
    command = shlex.split(tomllib.loads(config.read_text())["cosmic-ray"]["test-command"])
    for name in _baseline(command[command.index("run") + 1 :], root, venv):
        with contextlib.suppress(Exception):  # the odd module that cannot be imported by its name alone
            importlib.import_module(name)
    # what is imported now lives as long as the server: the runs' garbage collections (pytest forces several)
    # need not walk it
    gc.freeze()
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
            code = _wait(pid, conn)
            with contextlib.suppress(OSError):  # the client may be gone
                conn.sendall(str(code).encode())


def _wait(pid: int, conn: socket.socket) -> int:
    """The run's exit code. A run whose client hung up (cosmic-ray's timeout killed it) is killed too: the next
    mutant must not wait for it, nor count as killed by a timeout it never had."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if select.select([conn], [], [], 0.2)[0]:  # the client sends nothing more: readable means it hung up
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL


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
