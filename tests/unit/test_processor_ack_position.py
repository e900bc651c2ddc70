"""puller.ack_position reads what nats-py's Msg.metadata reads from a JetStream ack subject."""

from __future__ import annotations

import nats.errors
import pytest
from fincart_processor.puller import ack_position
from nats.aio.msg import Msg

SUBJECTS = [
    "$JS.ACK.ORDERS.proc-p3.2.12345.678.1764150000000000000.42",  # v1
    "$JS.ACK._.ACCHASH.ORDERS.proc-p3.1.987.65.1764150000000000000.0",  # v2 without the random token
    "$JS.ACK.hub.ACCHASH.ORDERS.proc-p3.7.55.44.1764150000000000000.3.rnd",  # v2
]


def msg(reply: str) -> Msg:
    return Msg(None, subject="orders.webhooks.3", reply=reply, data=b"{}")  # type: ignore[arg-type]


@pytest.mark.parametrize("reply", SUBJECTS)
def test_same_as_metadata(reply: str) -> None:
    m = msg(reply)
    assert ack_position(m) == (m.metadata.sequence.stream, m.metadata.num_delivered)


@pytest.mark.parametrize("reply", ["", "_INBOX.abc", "$JS.ACK.ORDERS.proc.1.2", "$JS.NAK.A.B.1.2.3.4.5"])
def test_not_a_jetstream_message(reply: str) -> None:
    with pytest.raises(nats.errors.NotJSMessageError):
        _ = msg(reply).metadata
    with pytest.raises(nats.errors.NotJSMessageError):
        ack_position(msg(reply))
