"""A deliberately broken ingest, the real ``fincart-ingest`` with one seam replaced:
``python broken_ingest.py MODE`` (``StackConfig.ingest_command``).

* ``correct``: nothing replaced (the control).
* ``answer-before-puback``: publishes each webhook without waiting for JetStream's PubAck and answers 200 at
  once, so a webhook the broker never stored (a node killed with the bytes in flight, no stream leader to take
  it) is acknowledged all the same (I5: acked webhooks lost).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from fincart_core.contracts.webhook import WebhookMessage
from fincart_core.telemetry import inject_headers
from fincart_ingest import app
from fincart_ingest.publisher import Published, WebhookPublisher


def answer_before_puback() -> None:
    async def publish_and_forget(self: WebhookPublisher, message: WebhookMessage, order_id: str) -> Published:
        headers = inject_headers({"Nats-Msg-Id": message.webhook_id})
        await self._nc.publish(
            self._topology.webhook_subject_for(order_id), message.model_dump_json().encode(), headers=headers
        )
        return Published(duplicate=False, stream_seq=0)

    WebhookPublisher.publish = publish_and_forget  # type: ignore[method-assign]


MODES: dict[str, Callable[[], None]] = {"correct": lambda: None, "answer-before-puback": answer_before_puback}


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in MODES:
        print(f"usage: broken_ingest.py {{{'|'.join(MODES)}}}", file=sys.stderr)
        raise SystemExit(2)
    MODES[sys.argv[1]]()
    app.main()
