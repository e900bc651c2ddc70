"""Credentials between FinCart's components: one NATS user per component with only the subjects it needs,
and a Redis password. The local stack generates them (embedded NATS/Redis), the chart keeps them in a Secret
(templates/nats/configmap.yaml and templates/redis carry the same permission table).

What each NATS user may do (JetStream's API is subjects too; stream names are matched by wildcard so that
prefixed test streams work; nobody but ``admin`` may purge or delete a stream):

- ``ingest``: publish webhooks, create/update/read the streams; nothing else (no events, no DLQ, no purge).
- ``processor``: consume webhooks (pull consumers, acks, reading unacked ones back by sequence after a
  restart), publish events and dead letters.
- ``sync``: read events (ordered push consumers) and stream info; publish nothing on FinCart subjects.
- ``chaos``: the ChaosTest load and verify runners (fincart_chaos.artifacts): publish ledgers on
  ``chaos.ledger.>`` and bundle objects on ``$O.>``, create/read their own streams, read messages back by
  subject (ordered consumers with flow control, the object store's meta lookups); no ``orders.*``, no acks
  (an ack on ORDERS would lose a webhook), no purge or delete (so an object is written once: run ids are unique).
- ``admin``: everything (the local stack's own housekeeping and tests; not given to any service).

Any other client (no user) is refused.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from urllib.parse import quote

from fincart_core.settings import replace_userinfo

COMPONENTS = ("ingest", "processor", "sync", "chaos")
_STREAMS = [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.CREATE.*",
    "$JS.API.STREAM.UPDATE.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
]


def _both(subject: str) -> list[str]:
    """A FinCart subject with and without a prefix token (FINCART_NATS_PREFIX isolates tests and installs)."""
    return [subject, f"*.{subject}"]


# component -> (publish allow, subscribe allow); every user may also receive replies on _INBOX.>
PERMISSIONS: dict[str, tuple[list[str], list[str]]] = {
    "ingest": ([*_both("orders.webhooks.*"), *_STREAMS], ["_INBOX.>"]),
    "processor": (
        [
            *_both("orders.events.*"),
            *_both("orders.dlq"),
            *_STREAMS,
            "$JS.API.CONSUMER.>",
            "$JS.ACK.>",
            "$JS.API.STREAM.MSG.GET.*",
            "$JS.API.DIRECT.GET.>",
        ],
        ["_INBOX.>"],
    ),
    "sync": (
        [*_STREAMS, "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.INFO.>", "$JS.API.CONSUMER.DELETE.>", "$JS.FC.>"],
        ["_INBOX.>"],
    ),
    # what nats-py 2.16 sends for artifacts.py: add_stream, stream_info, js.publish, ordered subscribe (stream
    # lookup by subject, ephemeral consumer, flow-control replies), object store put/get (meta by last_by_subj)
    "chaos": (
        [
            *_both("chaos.ledger.>"),
            "$O.>",
            "$JS.API.STREAM.CREATE.*",
            "$JS.API.STREAM.INFO.*",
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.MSG.GET.*",
            "$JS.API.CONSUMER.CREATE.>",
            "$JS.FC.>",
        ],
        ["_INBOX.>"],
    ),
}


def _secret() -> str:
    return secrets.token_hex(24)


@dataclass(frozen=True)
class StackCredentials:
    """Passwords of the NATS users (``admin`` + COMPONENTS) and of Redis, for one local stack."""

    nats: dict[str, str] = field(default_factory=lambda: {u: _secret() for u in ("admin", *COMPONENTS)})
    redis_password: str = field(default_factory=_secret)

    def nats_authorization(self) -> str:
        """The ``authorization {}`` block of a nats-server config."""

        def quoted(subjects: list[str]) -> str:
            return "[" + ", ".join(f'"{s}"' for s in subjects) + "]"

        users = [f'    {{user: "admin", password: "{self.nats["admin"]}"}}']
        for user, (publish, subscribe) in PERMISSIONS.items():
            users.append(
                f'    {{user: "{user}", password: "{self.nats[user]}", permissions: {{'
                f"publish: {{allow: {quoted(publish)}}}, subscribe: {{allow: {quoted(subscribe)}}}}}}}"
            )
        return "authorization {\n  users: [\n" + ",\n".join(users) + "\n  ]\n}\n"


def with_userinfo(url: str, user: str, password: str) -> str:
    """``nats://h:p,nats://h2:p`` -> the same URLs carrying ``user:password@`` instead of any they had
    (user empty: Redis style)."""
    return replace_userinfo(url, f"{quote(user, safe='')}:{quote(password, safe='')}")


def redact(url: str) -> str:
    """A URL safe to print or log: any password replaced by ***."""
    out = []
    for part in url.split(","):
        scheme, sep, rest = part.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if at and ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        out.append(f"{scheme}{sep}{userinfo}{at}{host}")
    return ",".join(out)
