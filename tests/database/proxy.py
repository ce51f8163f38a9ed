"""A TCP proxy in front of the local PostgreSQL server that can lose a reply on purpose.

`cut_next_reply()` arms it: the next bytes the server sends (the reply to the request in
flight, which the server has executed and committed by then) are dropped and both sides of
every connection are closed, so the client sees a lost connection after its statement was
applied: an outcome it cannot know.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class CuttingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._armed = False
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    def cut_next_reply(self) -> None:
        self._armed = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.upstream)
        self._writers |= {client_w, server_w}

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_server: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if from_server and self._armed:
                        self._armed = False
                        self.cuts += 1
                        # The reply is lost: close both sides as a dead network path would.
                        client_w.close()
                        server_w.close()
                        return
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(client_r, server_w, False), pump(server_r, client_w, True))
        self._writers -= {client_w, server_w}


@asynccontextmanager
async def cutting_proxy(host: str, port: int) -> AsyncIterator[CuttingProxy]:
    proxy = CuttingProxy(host, port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
