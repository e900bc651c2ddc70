"""A TCP fault proxy with a tiny HTTP control API (no privileges: it only forwards sockets).

Each route listens on a port and forwards every connection to one upstream (``processor-nats`` ->
``127.0.0.1:4222``). Faults are set and cleared at run time, Toxiproxy style, per route or for all routes:

* ``latency`` (+ ``jitter``): every chunk is delivered ``latency ± jitter`` later (order kept);
* ``blackhole``: nothing is forwarded any more and no close is passed on. Connections open while it is set
  stay dead after it is cleared (half-open, as when a NAT or load balancer drops a flow's state): only a
  client that checks its connection's liveness recovers. New connections get through once it is cleared;
* ``reset``: open connections are reset (RST) when it is set, new ones are reset on accept while it lasts;
* ``bandwidth``: at most ``bytesPerSecond`` per connection and direction.

``probability`` is drawn once per connection and fault; ``direction`` limits latency, blackhole and bandwidth
to the data towards the upstream or back from it.

Control API (JSON, ``fincart_core.contracts.chaostest.ProxyFault`` bodies)::

    GET    /faults          -> 200 {"faults": {name: fault}, "routes": {route: "host:port -> host:port"}}
    PUT    /faults/{name}   -> 200 the fault as stored (422 with the field on a bad body, 404 unknown route)
    DELETE /faults/{name}   -> 204, also when it was not set (healing is idempotent)
    GET    /healthz, /metrics
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web
from fincart_core.contracts.chaostest import ProxyFault, parse_duration
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import ValidationError

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
UPSTREAM_CONNECT_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0
UPSTREAM, DOWNSTREAM = "upstream", "downstream"


@dataclass(frozen=True)
class Route:
    name: str
    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int

    @classmethod
    def parse(cls, text: str) -> Route:
        """``NAME=LISTEN_HOST:PORT=UPSTREAM_HOST:PORT`` (listen port 0: any free port)."""
        try:
            name, listen, upstream = text.split("=")
            lhost, lport = listen.rsplit(":", 1)
            uhost, uport = upstream.rsplit(":", 1)
            return cls(name, lhost, int(lport), uhost, int(uport))
        except ValueError as exc:
            raise ValueError(f"route {text!r}: use NAME=LISTEN_HOST:PORT=UPSTREAM_HOST:PORT") from exc


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Counter(
            "fincart_proxy_connections_total", "Connections accepted", ["route", "outcome"], registry=self.registry
        )
        self.bytes = Counter(
            "fincart_proxy_bytes_total", "Bytes forwarded", ["route", "direction"], registry=self.registry
        )
        self.open = Gauge("fincart_proxy_open_connections", "Connections open now", ["route"], registry=self.registry)
        self.faults = Gauge("fincart_proxy_faults", "Faults set now", registry=self.registry)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), not a FIN: the peer sees 'connection reset'."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class Connection:
    route: str
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    dead: set[str] = field(default_factory=set)  # directions blackholed for good
    drawn: dict[str, bool] = field(default_factory=dict)  # fault name -> applies to this connection

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                _reset(writer)


async def _read(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(CHUNK)
    except ConnectionError:
        return b""


class _Delayed:
    """Chunks of one direction waiting for their delivery time, written in order by one task."""

    def __init__(self, writer: asyncio.StreamWriter, conn: Connection, direction: str) -> None:
        self.writer, self.conn, self.direction = writer, conn, direction
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.pending = 0  # queued or being written: later chunks must wait behind them
        self.last_due = 0.0
        self.task: asyncio.Task[None] | None = None

    def put(self, delay: float, chunk: bytes) -> None:
        self.last_due = max(self.last_due, time.monotonic() + delay)
        self.pending += 1
        self.queue.put_nowait((self.last_due, chunk))
        if self.task is None:
            self.task = asyncio.create_task(self._deliver())

    async def _deliver(self) -> None:
        while True:
            due, chunk = await self.queue.get()
            if not chunk:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.direction not in self.conn.dead:
                self.writer.write(chunk)
                await self.writer.drain()
            self.pending -= 1

    async def flush(self) -> None:
        if self.task is not None:
            self.queue.put_nowait((0.0, b""))
            await self.task

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


class FaultProxy:
    def __init__(self, routes: list[Route], *, seed: int | None = None) -> None:
        self.routes = {r.name: r for r in routes}
        self.faults: dict[str, ProxyFault] = {}
        self.connections: set[Connection] = set()
        self.metrics = Metrics()
        self.bound: dict[str, int] = {}  # route -> listening port
        self._random = random.Random(seed)
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- faults

    def set_fault(self, name: str, fault: ProxyFault) -> None:
        if fault.route is not None and fault.route not in self.routes:
            raise KeyError(fault.route)
        self.faults[name] = fault
        self.metrics.faults.set(len(self.faults))
        if fault.mode in ("reset", "blackhole"):
            for conn in list(self.connections):
                if self._applies(conn, name, fault):
                    if fault.mode == "reset":
                        conn.reset()
                    else:
                        conn.dead |= self._directions(fault)
        log.info("fault set", extra={"fault": name, "mode": fault.mode, "route": fault.route or "*"})

    def clear_fault(self, name: str) -> bool:
        removed = self.faults.pop(name, None) is not None
        for conn in self.connections:
            conn.drawn.pop(name, None)
        self.metrics.faults.set(len(self.faults))
        if removed:
            log.info("fault cleared", extra={"fault": name})
        return removed

    @staticmethod
    def _directions(fault: ProxyFault) -> set[str]:
        return {UPSTREAM, DOWNSTREAM} if fault.direction == "both" else {fault.direction}

    def _applies(self, conn: Connection, name: str, fault: ProxyFault) -> bool:
        if fault.route is not None and fault.route != conn.route:
            return False
        if name not in conn.drawn:
            conn.drawn[name] = fault.probability >= 1.0 or self._random.random() < fault.probability
        return conn.drawn[name]

    def _active(self, conn: Connection, direction: str | None = None) -> Iterator[ProxyFault]:
        for name, fault in list(self.faults.items()):
            if (direction is None or direction in self._directions(fault)) and self._applies(conn, name, fault):
                yield fault

    # ---- forwarding

    async def start(self) -> None:
        for route in self.routes.values():
            server = await asyncio.start_server(
                functools.partial(self._accept, route), route.listen_host, route.listen_port, reuse_address=True
            )
            self._servers.append(server)
            self.bound[route.name] = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.reset()
        if self._tasks:  # the reset connections' tasks end on their own, promptly
            await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
        for server in self._servers:
            await server.wait_closed()

    async def _accept(self, route: Route, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        conn = Connection(route.name, client)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.connections.add(conn)
        self.metrics.open.labels(route.name).inc()
        try:
            active = list(self._active(conn))
            if any(f.mode == "reset" for f in active):
                self.metrics.connections.labels(route.name, "reset").inc()
                return conn.reset()
            blackholed = {d for f in active if f.mode == "blackhole" for d in self._directions(f)}
            if blackholed:  # the upstream is "unreachable": the client's bytes go nowhere, it hears nothing
                conn.dead |= {UPSTREAM, DOWNSTREAM}
                self.metrics.connections.labels(route.name, "blackholed").inc()
                while await reader.read(CHUNK):
                    pass
                return None
            try:
                up_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(route.upstream_host, route.upstream_port), UPSTREAM_CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                self.metrics.connections.labels(route.name, "upstream_unreachable").inc()
                return conn.reset()  # as the upstream itself would answer a refused connect
            conn.upstream = upstream
            self.metrics.connections.labels(route.name, "forwarded").inc()
            await asyncio.gather(
                self._pump(conn, reader, upstream, UPSTREAM), self._pump(conn, up_reader, client, DOWNSTREAM)
            )
        finally:
            self.connections.discard(conn)
            self.metrics.open.labels(route.name).dec()
            for writer in (client, conn.upstream):  # here the client has gone: a dead connection may close too
                if writer is not None:
                    writer.close()

    async def _pump(
        self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        """Copy one direction, applying the faults set now to each chunk. Delayed chunks go through a queue so
        that reading goes on (latency, not a throughput cap); without faults a chunk is written at once."""
        counted = self.metrics.bytes.labels(conn.route, direction)
        delayed = _Delayed(writer, conn, direction)
        try:
            while chunk := await _read(reader):
                if direction in conn.dead:
                    continue
                delay, rate = 0.0, 0
                for fault in self._active(conn, direction):
                    if fault.mode == "blackhole":
                        conn.dead.add(direction)
                    elif fault.mode == "latency":
                        jitter = parse_duration(fault.jitter)
                        delay += max(0.0, parse_duration(fault.latency) + self._random.uniform(-jitter, jitter))
                    elif fault.mode == "bandwidth" and fault.bytes_per_second:
                        rate = min(rate or fault.bytes_per_second, fault.bytes_per_second)
                if direction in conn.dead:
                    continue
                if rate:
                    await asyncio.sleep(len(chunk) / rate)
                counted.inc(len(chunk))
                if delay or delayed.pending:
                    delayed.put(delay, chunk)
                else:
                    writer.write(chunk)
                    await writer.drain()
            await delayed.flush()
        except ConnectionError:
            pass
        finally:
            delayed.cancel()
        with contextlib.suppress(OSError):
            if direction not in conn.dead:
                writer.write_eof()  # half-close: the other direction may still be talking
            elif direction == UPSTREAM:
                writer.close()  # the client left a dead connection: free the upstream's (it hears nothing else)

    # ---- control API

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(
            [
                web.get("/faults", self._get_faults),
                web.put("/faults/{name}", self._put_fault),
                web.delete("/faults/{name}", self._delete_fault),
                web.get("/healthz", self._healthz),
                web.get("/metrics", self._metrics),
            ]
        )
        return app

    async def _get_faults(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "faults": {n: f.model_dump(mode="json", by_alias=True) for n, f in self.faults.items()},
                "routes": {
                    r.name: f"{r.listen_host}:{self.bound.get(r.name, r.listen_port)} -> "
                    f"{r.upstream_host}:{r.upstream_port}"
                    for r in self.routes.values()
                },
            }
        )

    async def _put_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            fault = ProxyFault.model_validate_json(await request.read())
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            return web.json_response({"error": problems}, status=422)
        try:
            self.set_fault(name, fault)
        except KeyError:
            return web.json_response(
                {"error": f"route: no route named {fault.route!r} (have {sorted(self.routes)})"}, status=404
            )
        return web.json_response(fault.model_dump(mode="json", by_alias=True))

    async def _delete_fault(self, request: web.Request) -> web.Response:
        self.clear_fault(request.match_info["name"])
        return web.Response(status=204)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(
    routes: list[Route],
    control_host: str,
    control_port: int,
    *,
    seed: int | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the proxy and its control API until ``stop`` is set (or forever); prints the bound ports once ready."""
    proxy = FaultProxy(routes, seed=seed)
    await proxy.start()
    runner = web.AppRunner(proxy.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, control_host, control_port)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"control": f"http://{control_host}:{port}", "routes": proxy.bound}), flush=True)
    if ready is not None:
        ready.set()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
        await proxy.stop()
