"""Reading ChaosTest files: one or more YAML documents, each a whole ChaosTest object."""

from __future__ import annotations

from pathlib import Path

import yaml
from fincart_core.contracts.chaostest import ChaosTest
from pydantic import ValidationError


class SpecError(ValueError):
    """A ChaosTest file that cannot be used; the message names the file, the document and the field."""


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(document)"


def describe(error: ValidationError) -> str:
    return "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in error.errors())


def parse_documents(text: str, source: str = "<text>") -> list[ChaosTest]:
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {exc}") from exc
    if not documents:
        raise SpecError(f"{source}: no ChaosTest in the file")
    tests = []
    for index, doc in enumerate(documents):
        where = f"{source} (document {index + 1})" if len(documents) > 1 else source
        if not isinstance(doc, dict):
            raise SpecError(f"{where}: expected a ChaosTest mapping, got {type(doc).__name__}")
        try:
            tests.append(ChaosTest.model_validate(doc))
        except ValidationError as exc:
            raise SpecError(f"{where}: {describe(exc)}") from exc
    names = [t.metadata.name for t in tests]
    if len(set(names)) != len(names):
        raise SpecError(f"{source}: ChaosTest names must be unique in one file, got {names}")
    return tests


def load_file(path: Path) -> list[ChaosTest]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_documents(text, str(path))
