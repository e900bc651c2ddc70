"""Who may open ``/sync``: the Origin check and the connection caps (pure logic, no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str]) -> bool:
    """A browser's ``Origin`` must be the service's own (same host[:port] as ``Host``) or listed in
    ``allowed``; a client without ``Origin`` is not a browser (no cross-site hijacking to prevent)."""
    if origin is None:
        return True
    if origin in allowed:
        return True
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and host is not None and netloc == host.lower()


@dataclass(frozen=True)
class Refusal:
    reason: str
    per_token: bool  # the token's own cap (close 4429), else the server's (1013, try again later)


@dataclass
class ConnectionCaps:
    """Open connections in total and per key (the token's id); ``admit`` reserves a slot or says why not."""

    total: int
    per_key: int
    count: int = 0
    by_key: Counter[str] = field(default_factory=Counter)

    def admit(self, key: str) -> Refusal | None:
        if self.count >= self.total:
            return Refusal(f"server at its limit of {self.total} connections, retry later", per_token=False)
        if self.by_key[key] >= self.per_key:
            return Refusal(f"at most {self.per_key} connections per token", per_token=True)
        self.count += 1
        self.by_key[key] += 1
        return None

    def release(self, key: str) -> None:
        self.count -= 1
        self.by_key[key] -= 1
        if self.by_key[key] <= 0:
            del self.by_key[key]
