"""Ingest writes its answers out instead of dumping the contract's models per request: they must stay equal."""

from __future__ import annotations

from fincart_core.contracts.webhook import ErrorResponse, WebhookAccepted, WebhookDuplicate
from fincart_ingest import routes


def test_answers_are_the_contract_models_as_dumped() -> None:
    assert routes.accepted("w-1") == WebhookAccepted(webhook_id="w-1").model_dump(by_alias=True)
    assert routes.duplicate("w-1") == WebhookDuplicate(webhook_id="w-1").model_dump(by_alias=True)
    assert routes.error("bad") == ErrorResponse(detail="bad").model_dump(by_alias=True)
