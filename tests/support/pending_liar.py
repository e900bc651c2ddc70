"""A TCP proxy in front of nats-server that reports every JetStream delivery's ``num_pending`` as 0.

nats-server 2.9 miscounts that figure at times (a chaos run caught sync ending a resume replay on it,
events short of the position it announced). This proxy makes the miscount happen on every delivery, so a
test shows that a client of the real server does not depend on it. Only the pending token of a
``$JS.ACK.`` reply subject in a ``MSG``/``HMSG`` line changes; payloads and everything else pass through.
"""

from __future__ import annotations

import asyncio
import contextlib


def _lie(line: bytes) -> bytes:
    """The MSG/HMSG control line with the ack reply's pending token set to 0 (v1 and v2 ack subjects)."""
    parts = line.split(b" ")
    replies = [i for i, p in enumerate(parts) if p.startswith(b"$JS.ACK.")]
    if not replies:
        return line
    tokens = parts[replies[0]].split(b".")
    # v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending> (9 tokens);
    # v2: $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<token> (12)
    index = 8 if len(tokens) == 9 else 10
    tokens[index] = b"0"
    parts[replies[0]] = b".".join(tokens)
    return b" ".join(parts)


async def _to_client(upstream: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    while line := await upstream.readline():
        if line.startswith((b"MSG ", b"HMSG ")):
            line = _lie(line.rstrip(b"\r\n")) + b"\r\n"
            size = int(line.split(b" ")[-1])  # the payload (headers included), then CRLF
            client.write(line + await upstream.readexactly(size + 2))
        else:
            client.write(line)
        await client.drain()


async def _to_server(client: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
    while chunk := await client.read(65536):
        upstream.write(chunk)
        await upstream.drain()


class PendingLiar:
    """``async with PendingLiar(host, port) as url``: a nats:// URL whose deliveries all say pending 0."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        pumps = [
            asyncio.ensure_future(_to_client(up_reader, writer)),
            asyncio.ensure_future(_to_server(reader, up_writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for w in (writer, up_writer):
                w.close()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"nats://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
