"""How the chaos engine reaches the sync service: its base URL, the read token it requires, and the Host
header of an Ingress rule. Every WebSocket and HTTP client of sync (observers, replay, read-API checks) is
made here, so the token and the Host header are never forgotten on one path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import websockets

CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SyncEndpoint:
    url: str  # where the TCP connection goes (sync itself, or an ingress controller)
    token: str = ""  # the read token (FINCART_SYNC_TOKEN); never logged
    host: str | None = None  # the Host header of every request: an Ingress rule's host

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ws_url(self, **query: str | int | None) -> str:
        """The ``/sync`` URL; with ``host`` its authority is the Ingress host (the Host header)."""
        base = urlsplit(self.url)._replace(netloc=self.host).geturl() if self.host else self.url
        base = base.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        params = urlencode({k: v for k, v in query.items() if v is not None})
        return f"{base}/sync{'?' + params if params else ''}"

    def websocket(self, **query: str | int | None) -> websockets.connect:
        """Open ``/sync``; with ``host`` the TCP connection still goes to ``url`` (an ingress controller's
        Service routing on the Ingress host)."""
        tcp: dict[str, Any] = {}
        if self.host:
            target = urlsplit(self.url)
            tcp = {"host": target.hostname, "port": target.port or (443 if target.scheme == "https" else 80)}
        return websockets.connect(
            self.ws_url(**query),
            open_timeout=CONNECT_TIMEOUT_S,
            max_size=None,
            additional_headers=self.headers() or None,
            **tcp,
        )

    def http(self, timeout: float) -> httpx.AsyncClient:
        """A client of the read API (``GET /orders``...), token and Host header set."""
        headers = {**self.headers(), **({"Host": self.host} if self.host else {})}
        return httpx.AsyncClient(base_url=self.url, timeout=timeout, headers=headers)
