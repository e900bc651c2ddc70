"""Processor settings: the replica index from FINCART_REPLICA_INDEX or the StatefulSet ordinal in HOSTNAME."""

from __future__ import annotations

import pytest
from fincart_processor import app
from fincart_processor.settings import ProcessorSettings
from pydantic import ValidationError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FINCART_REPLICAS", "FINCART_REPLICA_INDEX", "FINCART_BATCH_SIZE", "FINCART_MAX_DELIVER", "HOSTNAME"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = ProcessorSettings()
    assert (s.replicas, s.index, s.batch_size, s.max_deliver, s.http_port) == (1, 0, 500, 5, 8081)


def test_the_statefulset_ordinal_is_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "fincart-processor-2")
    monkeypatch.setenv("FINCART_REPLICAS", "3")
    assert ProcessorSettings().index == 2


def test_an_explicit_index_wins_and_a_hostname_without_ordinal_means_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINCART_REPLICAS", "4")
    monkeypatch.setenv("HOSTNAME", "fincart-processor-3")
    monkeypatch.setenv("FINCART_REPLICA_INDEX", "1")
    assert ProcessorSettings().index == 1
    monkeypatch.delenv("FINCART_REPLICA_INDEX")
    monkeypatch.setenv("HOSTNAME", "laptop")
    assert ProcessorSettings().index == 0


def test_an_index_outside_the_replicas_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINCART_REPLICAS", "2")
    monkeypatch.setenv("HOSTNAME", "fincart-processor-2")
    with pytest.raises(ValidationError, match="must be below replicas 2"):
        ProcessorSettings()


def test_the_cli_names_bad_settings_and_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("FINCART_BATCH_SIZE", "zero")
    with pytest.raises(SystemExit) as exc:
        app.main()
    assert exc.value.code == 2
    assert "batch_size" in capsys.readouterr().err
