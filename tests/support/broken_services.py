"""Deliberately broken ingest and sync services, for proving that the chaos verifier can fail: the real
``fincart-ingest`` / ``fincart-sync`` with exactly one seam replaced at process start, run as a process
of the local stack: ``python broken_services.py SERVICE MODE`` (``StackConfig.ingest_command`` /
``sync_command``). Production code is not changed; the seam is patched in this process only.

Modes and the invariant the verifier has to name:

* ``ingest correct`` / ``sync correct``: nothing replaced (the controls).
* ``ingest mark-before-puback``: sets the dedupe mark before JetStream acknowledged the publish, so a
  publish that times out (NATS down longer than FINCART_PUBLISH_TIMEOUT_S) leaves a mark that answers the
  sender's retry "duplicate": acknowledged, never stored (I5 lost).
* ``ingest no-validation``: builds the order without validating it (``model_construct``): a poison body
  is published, or crashes the handler into a 500 (I7, poison answered neither 4xx nor 2xx).
* ``sync snapshot-seq-too-far``: stamps a snapshot with the stream sequence after the one it was read at;
  a client that resumes from that stamp skips one event (I6, a resumed observer missed versions).
* ``sync cursor-past-the-page``: ``GET /orders`` reads one order more than the page to know whether there is
  a next page, and takes the cursor from that extra order instead of the page's last: every page boundary
  skips one order (I1).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from fincart_core.contracts.events import OrderState
from fincart_core.contracts.webhook import ShopifyOrder


def mark_before_puback() -> None:
    from fincart_ingest.dedupe import DedupeMarks
    from fincart_ingest.publisher import Published, WebhookPublisher

    marks: list[DedupeMarks] = []
    init = DedupeMarks.__init__

    def remember(self: DedupeMarks, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        marks.append(self)

    publish = WebhookPublisher.publish

    async def mark_then_publish(self: WebhookPublisher, message, order_id: str) -> Published:  # type: ignore[no-untyped-def]
        await marks[0].mark(message.webhook_id)  # the bug: remembered before the broker acknowledged
        return await publish(self, message, order_id)

    DedupeMarks.__init__ = remember  # type: ignore[method-assign]
    WebhookPublisher.publish = mark_then_publish  # type: ignore[method-assign]


def no_validation() -> None:
    from fincart_ingest import webhook_checks

    def parse_unchecked(body: bytes) -> tuple[ShopifyOrder, dict[str, object]]:
        payload = json.loads(body)
        return ShopifyOrder.model_construct(**payload), payload

    webhook_checks.parse_order = parse_unchecked


def snapshot_seq_too_far() -> None:
    from fincart_sync import protocol, session

    class StampedTooFar(protocol.SnapshotMessage):
        def __init__(self, **data: object) -> None:
            data["seq"] = int(data["seq"]) + 1  # type: ignore[call-overload]
            super().__init__(**data)

    session.SnapshotMessage = StampedTooFar  # type: ignore[misc]


def cursor_past_the_page() -> None:
    from fincart_sync.orders_store import OrdersStore

    page = OrdersStore.page

    async def page_with_lookahead_cursor(
        self: OrdersStore, limit: int, status: str | None = None, cursor: str | None = None
    ) -> tuple[list[OrderState], str | None]:
        orders, next_cursor = await page(self, limit + 1, status, cursor)  # the lookahead order's cursor
        return orders[:limit], next_cursor if len(orders) > limit else None

    OrdersStore.page = page_with_lookahead_cursor  # type: ignore[method-assign]


MODES: dict[str, dict[str, Callable[[], None]]] = {
    "ingest": {"correct": lambda: None, "mark-before-puback": mark_before_puback, "no-validation": no_validation},
    "sync": {
        "correct": lambda: None,
        "snapshot-seq-too-far": snapshot_seq_too_far,
        "cursor-past-the-page": cursor_past_the_page,
    },
}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in MODES or sys.argv[2] not in MODES[sys.argv[1]]:
        print(
            "usage: broken_services.py ingest|sync MODE ("
            + "; ".join(f"{service}: {'|'.join(modes)}" for service, modes in MODES.items())
            + ")",
            file=sys.stderr,
        )
        raise SystemExit(2)
    MODES[sys.argv[1]][sys.argv[2]]()
    if sys.argv[1] == "ingest":
        from fincart_ingest.app import main
    else:
        from fincart_sync.app import main
    main()
