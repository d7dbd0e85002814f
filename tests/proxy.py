"""A loopback TCP proxy that can cut a connection right after forwarding a request.

The server executes the request, but its reply never reaches the client: the client
sees a connection error for a call that was in fact applied, and retries it.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis_checkpoint.conformance.servers import free_port


class CuttingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.cut_on: bytes | None = None  # armed: cut after the next request containing this
        self.connections = 0
        self.forwarded: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        replies = asyncio.ensure_future(_pump(up_reader, writer))
        try:
            while chunk := await reader.read(65536):
                self.forwarded.append(chunk)
                up_writer.write(chunk)
                await up_writer.drain()
                if self.cut_on is not None and self.cut_on in chunk:
                    self.cut_on = None
                    replies.cancel()  # the reply is dropped on the floor
                    await asyncio.sleep(0.05)  # let the server finish executing it
                    break
        finally:
            replies.cancel()
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()

    def count(self, needle: bytes) -> int:
        return sum(chunk.count(needle) for chunk in self.forwarded)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()


class SwitchProxy:
    """A loopback TCP proxy that can be switched off: `cut()` drops every connection it
    carries and refuses new ones (the server is unreachable), `restore()` lets them in."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.on = True
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SwitchProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()

    def cut(self) -> None:
        self.on = False
        for writer in list(self._open):
            writer.close()

    def restore(self) -> None:
        self.on = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.on:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(_forward(reader, up_writer), _forward(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._open.discard(w)
                w.close()


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side ends, then close the other: a cut reaches both ends."""
    await _pump(reader, writer)
    writer.close()
