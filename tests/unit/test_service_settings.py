"""``service_settings``: how every HTTP service reads its environment at start-up."""

from __future__ import annotations

import pytest
from fincart_core.auth import new_token, token_hash
from fincart_core.ops import service_settings
from fincart_sync.settings import SyncSettings


def test_an_invalid_setting_is_a_message_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("FINCART_HTTP_PORT", "99999")
    with pytest.raises(SystemExit) as exited:
        service_settings(SyncSettings, "fincart-sync")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "fincart-sync: invalid settings" in err and "http_port" in err


def test_valid_settings_are_returned(monkeypatch):
    monkeypatch.setenv("FINCART_HTTP_PORT", "9123")
    digest = token_hash(new_token())
    monkeypatch.setenv("FINCART_READ_TOKEN_HASHES", digest)
    settings = service_settings(SyncSettings, "fincart-sync")
    assert settings.http_port == 9123 and settings.read_token_hashes == [digest]
