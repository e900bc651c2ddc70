"""Processor settings: defaults, the lease timing check, and the CLI's answer to bad settings."""

from __future__ import annotations

import pytest
from fincart_processor import app
from fincart_processor.settings import ProcessorSettings
from pydantic import ValidationError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FINCART_BATCH_SIZE",
        "FINCART_LEASE_TTL_S",
        "FINCART_LEASE_RENEW_S",
        "FINCART_DB_QUERY_TIMEOUT_S",
        "FINCART_DB_ACQUIRE_TIMEOUT_S",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = ProcessorSettings()
    assert (s.batch_size, s.http_port, s.lease_ttl_s, s.lease_renew_s) == (500, 8081, 10.0, 2.0)
    assert (s.db_acquire_timeout_s, s.db_query_timeout_s) == (5.0, 5.0)


def test_renewing_less_often_than_half_the_ttl_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINCART_LEASE_TTL_S", "3")
    monkeypatch.setenv("FINCART_LEASE_RENEW_S", "2")
    with pytest.raises(ValidationError, match="at most half of lease_ttl_s"):
        ProcessorSettings()


def test_a_query_bound_that_would_let_a_cut_off_replica_expire_the_others_leases_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FINCART_DB_QUERY_TIMEOUT_S", "8")  # + renew 2 s reaches the 10 s TTL
    with pytest.raises(ValidationError, match="must be less than lease_ttl_s"):
        ProcessorSettings()
    monkeypatch.setenv("FINCART_DB_QUERY_TIMEOUT_S", "7.5")
    assert ProcessorSettings().db_query_timeout_s == 7.5


def test_the_cli_names_bad_settings_and_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("FINCART_BATCH_SIZE", "zero")
    with pytest.raises(SystemExit) as exc:
        app.main()
    assert exc.value.code == 2
    assert "batch_size" in capsys.readouterr().err
