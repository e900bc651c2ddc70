"""Create and drop databases (the dev stack and the tests give each run its own)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fincart_core.settings import to_asyncpg_url


def _split(url: str) -> tuple[str, str]:
    """(URL of the ``postgres`` maintenance database, name of the database in ``url``)."""
    parts = urlsplit(to_asyncpg_url(url))
    name = parts.path.lstrip("/") or "postgres"
    return urlunsplit(parts._replace(path="/postgres")), name


async def ensure_database(url: str, timeout: float = 10.0) -> bool:
    """Create the database named in ``url`` if missing; True when it was created."""
    admin_url, name = _split(url)
    conn = await asyncpg.connect(admin_url, timeout=timeout)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


async def drop_database(url: str, timeout: float = 10.0) -> None:
    admin_url, name = _split(url)
    conn = await asyncpg.connect(admin_url, timeout=timeout)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))
