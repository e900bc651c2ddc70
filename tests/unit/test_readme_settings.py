"""Every FINCART_* setting a component reads is documented: the services' in the README's configuration
table, the operator's in chaos-operator/README.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fincart_core.settings import CommonSettings
from fincart_ingest.settings import IngestSettings
from fincart_operator.settings import OperatorSettings
from fincart_processor.settings import ProcessorSettings
from fincart_sync.settings import SyncSettings
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS: dict[str, tuple[Path, tuple[type[BaseSettings], ...]]] = {
    "services": (ROOT / "README.md", (CommonSettings, IngestSettings, ProcessorSettings, SyncSettings)),
    "operator": (ROOT / "chaos-operator" / "README.md", (OperatorSettings,)),
}


@pytest.mark.parametrize("component", DOCS)
def test_every_setting_is_documented(component: str) -> None:
    readme, models = DOCS[component]
    documented = set(re.findall(r"`(FINCART_[A-Z0-9_]+)`", readme.read_text()))
    if component == "operator":  # the shared ones (log level, HTTP host, ...) are in the root README
        documented |= set(re.findall(r"`(FINCART_[A-Z0-9_]+)`", DOCS["services"][0].read_text()))
    read = {f"FINCART_{name.upper()}" for model in models for name in model.model_fields}
    assert read - documented == set(), f"document these in {readme.relative_to(ROOT)}"
