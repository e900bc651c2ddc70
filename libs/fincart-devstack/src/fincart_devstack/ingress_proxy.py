"""The Ingress on one machine: Debian's nginx in front of ingest and sync, with the chart's rules.

In the cluster, ingress-nginx gets its body limit, timeouts, buffering and routes from the chart's
Ingress (deploy/helm/fincart/templates/networking/ingress.yaml, numbers in ``fincart.ingress.annotations``
of _helpers.tpl). :class:`IngressRules` computes the same numbers from the same inputs (the services'
FINCART_MAX_BODY_BYTES and FINCART_HEARTBEAT_INTERVAL_S); tests/integration/test_deploy_chart.py renders
the chart and compares. :class:`NginxIngress` writes them into an nginx config that behaves like
ingress-nginx's defaults (HTTP/1.1 keep-alive upstreams, WebSocket upgrade, X-Forwarded-* and X-Request-ID,
404 for any other path) and runs nginx in the foreground as a :class:`ManagedProcess`, with its prefix,
temp dirs, pid file and JSON access log in the run's workdir, on a free loopback port.
"""

from __future__ import annotations

import math
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fincart_devstack.localstack import (
    READY_TIMEOUT_S,
    ManagedProcess,
    StackError,
    find_binary,
    free_port,
    reachable,
    wait_for,
)

# ingest answers 413 itself (logged, counted in fincart_ingest_requests_total) up to this far above its limit
BODY_MARGIN_BYTES = 1_048_576
# the proxy cuts an idle WebSocket after this many heartbeat intervals: two heartbeats may be missed
TIMEOUT_HEARTBEATS = 3
# the chart's defaults (values.yaml), which are the services' settings defaults (a unit test checks both)
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_HEARTBEAT_INTERVAL_S = 15.0
ANNOTATION = "nginx.ingress.kubernetes.io/"


@dataclass(frozen=True)
class Route:
    """One path of the chart's Ingress: ``exact`` is pathType Exact, else Prefix."""

    path: str
    exact: bool
    backend: Literal["ingest", "sync"]


# Only the public paths; /metrics, /docs, /healthz, /readyz are answered 404 by the proxy.
ROUTES = (
    Route("/webhooks", False, "ingest"),
    Route("/sync", True, "sync"),
    Route("/orders", False, "sync"),
    Route("/", True, "sync"),
)


@dataclass(frozen=True)
class IngressRules:
    """What the Ingress enforces, derived from the values the services run with."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    host: str = ""  # the Ingress rule's host; empty: any host

    @classmethod
    def from_env(cls, env: Mapping[str, str], host: str = "") -> IngressRules:
        """From the FINCART_* environment the services get (their defaults where unset)."""
        return cls(
            max_body_bytes=int(env.get("FINCART_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
            heartbeat_interval_s=float(env.get("FINCART_HEARTBEAT_INTERVAL_S", DEFAULT_HEARTBEAT_INTERVAL_S)),
            host=host,
        )

    @property
    def body_limit_bytes(self) -> int:
        return self.max_body_bytes + BODY_MARGIN_BYTES

    @property
    def timeout_s(self) -> int:
        return math.ceil(self.heartbeat_interval_s * TIMEOUT_HEARTBEATS)

    def annotations(self) -> dict[str, str]:
        """The ingress-nginx annotations the chart renders for the same values."""
        return {
            f"{ANNOTATION}proxy-body-size": str(self.body_limit_bytes),
            f"{ANNOTATION}proxy-read-timeout": str(self.timeout_s),
            f"{ANNOTATION}proxy-send-timeout": str(self.timeout_s),
            f"{ANNOTATION}proxy-buffering": "off",
        }

    def service_env(self) -> dict[str, str]:
        """The services' side of the same numbers, so that proxy and services cannot disagree."""
        return {
            "FINCART_MAX_BODY_BYTES": str(self.max_body_bytes),
            "FINCART_HEARTBEAT_INTERVAL_S": str(self.heartbeat_interval_s),
        }


ACCESS_LOG_FORMAT = (
    '{"time":"$time_iso8601","request_id":"$request_id","remote_addr":"$remote_addr","method":"$request_method",'
    '"uri":"$uri","host":"$host","status":$status,"request_length":$request_length,"bytes_sent":$bytes_sent,'
    '"request_time":$request_time,"upstream":"$upstream_addr","upstream_status":"$upstream_status",'
    '"upstream_response_time":"$upstream_response_time"}'
)


def _locations(route: Route, upstream: str) -> list[str]:
    proxy = f"{{ proxy_pass http://{upstream}; }}"
    if route.exact:
        return [f"location = {route.path} {proxy}"]
    # ingress-nginx's Prefix: the path itself and everything below it, not /webhooksX
    return [f"location = {route.path} {proxy}", f"location {route.path.rstrip('/')}/ {proxy}"]


def render_config(rules: IngressRules, *, prefix: Path, port: int, upstreams: Mapping[str, int]) -> str:
    """nginx.conf for ``rules`` (ingress-nginx's defaults elsewhere); ``upstreams``: backend -> port.
    A route whose backend is not running answers 503."""
    locations = []
    for route in ROUTES:
        if route.backend in upstreams:
            locations.extend(_locations(route, route.backend))
        else:
            locations.append(f"location {'= ' if route.exact else ''}{route.path} {{ return 503; }}")
    blocks = "\n".join(
        f"  upstream {name} {{ server 127.0.0.1:{upstream_port}; keepalive 320; keepalive_timeout 60s;"
        f" keepalive_requests 10000; }}"
        for name, upstream_port in upstreams.items()
    )
    # as root, nginx would run its workers as nobody, who cannot enter the run's private workdir
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    tmp = prefix / "tmp"
    listen = f"listen 127.0.0.1:{port}"
    # with a host rule, other hosts reach the default server: 404, as from ingress-nginx's default backend
    other_hosts = f"  server {{ {listen} default_server; return 404; }}\n" if rules.host else ""
    server_name = rules.host or "_"
    default = "" if rules.host else " default_server"
    locations_text = "\n".join(f"    {line}" for line in locations)
    return f"""# rendered by fincart_devstack.ingress_proxy from IngressRules({rules})
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
{user}
events {{ worker_connections 4096; }}
http {{
  log_format fincart escape=json '{ACCESS_LOG_FORMAT}';
  access_log {prefix}/access.log fincart;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server_tokens off;
  keepalive_timeout 75s;
  keepalive_requests 1000;
  client_max_body_size {rules.body_limit_bytes};
  client_body_buffer_size 8k;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
{blocks}
{other_hosts}  server {{
    {listen}{default};
    server_name {server_name};
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $connection_upgrade;
    proxy_set_header X-Request-ID $request_id;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header X-Forwarded-Port $server_port;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Scheme $scheme;
    proxy_set_header Proxy "";
    proxy_connect_timeout 5s;
    proxy_read_timeout {rules.timeout_s}s;
    proxy_send_timeout {rules.timeout_s}s;
    proxy_buffering off;
    proxy_request_buffering on;
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 3;
{locations_text}
    location / {{ return 404; }}
  }}
}}
"""


class NginxIngress(ManagedProcess):
    """nginx in the foreground with the chart's Ingress rules, in ``workdir``/nginx."""

    def __init__(
        self,
        workdir: Path,
        rules: IngressRules,
        upstreams: Mapping[str, int],
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.rules = rules
        self.prefix = workdir / "nginx"
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.config_path = self.prefix / "nginx.conf"
        self.config_path.write_text(render_config(rules, prefix=self.prefix, port=self.port, upstreams=upstreams))
        try:
            binary = find_binary("nginx", ("/usr/sbin/nginx",))
        except StackError as exc:
            raise StackError(f"{exc}: install Debian's nginx (apt-get install nginx)") from exc
        super().__init__(
            "nginx",
            [binary, "-p", str(self.prefix), "-c", str(self.config_path), "-e", "stderr"],
            log_path=workdir / "nginx.log",
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def start(self) -> None:
        super().start()

        def up() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise StackError(f"nginx exited with {self.proc.returncode}:\n{self.log_tail()}")
            return reachable(self.base_url)

        wait_for(up, READY_TIMEOUT_S, "nginx")
