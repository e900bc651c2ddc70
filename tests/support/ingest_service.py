"""Starting the real ingest service and signing requests for it (ingest tests and the ingest fuzz test)."""

from __future__ import annotations

from pathlib import Path

from fincart_core.signing import sign
from fincart_devstack.localstack import ServiceProcess, find_binary, free_port

SECRET = "test-secret"  # tests/conftest.py's service_env has FINCART_WEBHOOK_SECRET=test-secret


def signed_headers(
    body: bytes, webhook_id: str | None = "wh-1", topic: str = "orders/updated", secret: str = SECRET
) -> dict[str, str]:
    headers = {
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": "shop.example",
        "X-Shopify-Triggered-At": "2026-01-01T10:00:01Z",
        "Content-Type": "application/json",
    }
    if webhook_id is not None:
        headers["X-Shopify-Webhook-Id"] = webhook_id
    return headers


def start_ingest(env: dict[str, str], tmp_path: Path) -> ServiceProcess:
    port = free_port()
    service = ServiceProcess(
        name="ingest",
        argv=[find_binary("fincart-ingest")],
        env={**env, "FINCART_HTTP_PORT": str(port)},
        log_path=tmp_path / "ingest.log",
        port=port,
    )
    service.start()
    return service
