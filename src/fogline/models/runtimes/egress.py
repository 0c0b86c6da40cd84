"""The platform's side of a sandboxed model's only ways out: one Unix socket per allowed
address, in the model's own run directory, each connection relayed on to that address. The
shim inside the sandbox (runtimes/shim.py) relays the model's TCP connections to these."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Egress:
    """One address a model may reach: `port` on the sandbox's loopback stands for host:port."""

    name: str  # also the socket's file name
    host: str
    port: int


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction of a relayed connection until it ends (both sides of the sandbox's
    relays use it: egress here, the shim inside)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


class EgressRelays:
    """The relays of one model: opened before it starts, closed when it stops."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self, directory: Path, egress: list[Egress], uid: int | None) -> None:
        for e in egress:
            path = directory / f"{e.name}.sock"
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

            async def handle(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, e: Egress = e
            ) -> None:
                await self._relay(e, r, w)

            server = await asyncio.start_unix_server(handle, path=str(path))
            if uid is not None:  # the model may connect; the directory is not its to change
                os.chown(path, uid, -1)
            os.chmod(path, 0o600)
            self._servers.append(server)

    async def _relay(
        self, e: Egress, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(e.host, e.port)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._writers.update(pair)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for w in pair:
                self._writers.discard(w)
                w.close()

    async def close(self) -> None:
        """Stop listening and end the open connections (their relays then finish)."""
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        self._servers.clear()
