"""A TCP proxy the test controls, to make a real dependency (moto's S3) unreachable or misbehave.

Runs on its own event loop thread on 127.0.0.1. Modes:
  pass            forward both ways
  down            nothing listens on the port (connection refused); open connections are reset
  cut_upload(n)   forward n more bytes client->upstream (counted from the switch, over all
                  connections), then reset every connection that sends more
  hold_responses  forward client->upstream, but never send the upstream's answer back
"""

from __future__ import annotations

import asyncio
import socket
import threading


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.cut_after = 0
        self._remaining = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            _reset(w)
        self._conns.clear()

    def set_mode(self, mode: str, cut_after: int = 0) -> None:
        self.mode, self.cut_after = mode, cut_after
        self._remaining = cut_after
        self._call(self._unlisten() if mode == "down" else self._listen())

    def stop(self) -> None:
        self._call(self._unlisten())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        self._conns.update((writer, up_writer))

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.mode == "cut_upload":
                    room = self._remaining
                    self._remaining = max(0, room - len(data))
                    if room <= len(data):
                        up_writer.write(data[:room])
                        await up_writer.drain()
                        raise ConnectionResetError("proxy cut the upload")
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if self.mode == "hold_responses":
                    continue  # swallowed: the client waits for an answer that never comes
                writer.write(data)
                await writer.drain()

        try:
            tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
            # Whichever side ends first ends the connection (HTTP clients never half-close early).
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            for t in done:
                t.exception()  # retrieved, so asyncio does not warn about it
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, up_writer):
                self._conns.discard(w)
                _reset(w)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            # RST rather than FIN: the client sees a dead peer, not a clean end of response.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    writer.transport.abort()
