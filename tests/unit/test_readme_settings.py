"""Every FINCART_* setting a service reads is documented in the README's configuration table."""

from __future__ import annotations

import re
from pathlib import Path

from fincart_core.settings import CommonSettings
from fincart_ingest.settings import IngestSettings
from fincart_processor.settings import ProcessorSettings
from fincart_sync.settings import SyncSettings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_readme() -> None:
    documented = set(re.findall(r"`(FINCART_[A-Z0-9_]+)`", README.read_text()))
    read = {f"FINCART_{name.upper()}" for model in (CommonSettings, IngestSettings, ProcessorSettings, SyncSettings)
            for name in model.model_fields}
    assert read - documented == set(), "add these to the README's Configuration table"
