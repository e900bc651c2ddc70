"""Run the alembic migrations programmatically (``fincart-migrate``, tests, ``fincart-dev up``)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from fincart_core.blocking import run_blocking
from fincart_core.settings import CommonSettings, to_sqlalchemy_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", to_sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade to ``revision`` (the alembic env runs its own event loop, hence run_blocking)."""
    run_blocking(command.upgrade, alembic_config(database_url), revision)


def main() -> None:
    """``fincart-migrate [REVISION]``: upgrade FINCART_DATABASE_URL to REVISION (default head)."""
    settings = CommonSettings()
    revision = sys.argv[1] if len(sys.argv) > 1 else "head"
    try:
        upgrade(settings.database_url, revision)
    except Exception as exc:  # a CLI answers with a message and an exit code, not a traceback
        print(f"fincart-migrate: migration to {revision} failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    print(f"fincart-migrate: database at {revision}")
