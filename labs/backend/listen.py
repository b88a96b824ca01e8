"""Listening sockets that read a PROXY protocol header before anything else (and TLS).

Theory of operation
-------------------
Without ``--proxy-protocol`` the backends use ``loop.create_server`` (with ``ssl=`` for
``--tls``) and never come here: the plain path pays nothing for this module.

With it, the header must be consumed before the protocol (HTTP parser, game, or TLS
handshake) sees a single byte, and *exactly* the header: with TLS the next byte is the
ClientHello, which belongs to the TLS layer, and a transport cannot be handed bytes it did
not read itself. So this module runs its own accept loop and, per connection:

1. waits until the socket is readable and *peeks* (``MSG_PEEK``) at what arrived, asking
   ``proxy_protocol.parse`` whether it is a complete header, the start of one, or garbage;
2. garbage: logs a line through ``on_refused`` and closes the connection (a connection
   that closes without sending anything is a TCP health check, closed quietly); no header
   within ``header_timeout`` seconds: same, refused;
3. complete: ``recv`` exactly ``header.length`` bytes, then hand the socket to
   ``loop.connect_accepted_socket(factory(header), ssl=...)``: the TLS handshake (if any)
   and the protocol start on the byte right after the header.

Readiness is level-triggered, so a peek that shows no new bytes (a header arriving in
pieces) waits a few milliseconds before looking again instead of spinning.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Callable

from . import proxy_protocol
from .proxy_protocol import ProxyHeader, ProxyProtocolError

log = logging.getLogger("labs.backend")

HEADER_TIMEOUT_S = 5.0
_FIRST_PEEK = 256   # covers every v1 header and v2 headers with addresses and small TLVs


class Listener:
    """The PROXY-protocol listener; like ``asyncio.Server``: ``sockets`` and ``close()``."""

    def __init__(self, sock: socket.socket, factory: Callable[[ProxyHeader], asyncio.BaseProtocol],
                 ssl, on_refused: Callable[[str, str], None], header_timeout: float):
        self.sock = sock
        self.sockets = [sock]
        self._factory = factory
        self._ssl = ssl
        self._on_refused = on_refused
        self._header_timeout = header_timeout
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task] = set()
        self._accepting = self._loop.create_task(self._accept_loop())

    def close(self) -> None:
        self._accepting.cancel()
        for task in list(self._pending):
            task.cancel()
        self.sock.close()

    async def _accept_loop(self) -> None:
        loop = self._loop
        while True:
            try:
                conn, addr = await loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:  # EMFILE and friends: say so, breathe, go on
                log.warning("accept failed on %s: %s", _format_peer(self.sock.getsockname()), exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._start(conn, addr))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _start(self, conn: socket.socket, addr) -> None:
        peer = _format_peer(addr)
        try:
            header = await asyncio.wait_for(self._read_header(conn), self._header_timeout)
        except ProxyProtocolError as exc:
            self._refuse(conn, peer, str(exc))
            return
        except asyncio.TimeoutError:
            self._refuse(conn, peer, f"no complete PROXY protocol header within "
                                     f"{self._header_timeout:g}s")
            return
        except _Closed:
            conn.close()  # connect-then-close: a TCP health check, nothing to report
            return
        except (asyncio.CancelledError, Exception):
            conn.close()
            raise
        try:
            await self._loop.connect_accepted_socket(lambda: self._factory(header), conn,
                                                     ssl=self._ssl)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            # A failed TLS handshake (wrong CA, plain HTTP on a TLS port...) or a client
            # gone meanwhile: the transport is closed and the client has seen the failure,
            # exactly as with loop.create_server(ssl=...), which does not report them either.
            conn.close()

    async def _read_header(self, conn: socket.socket) -> ProxyHeader:
        want = _FIRST_PEEK
        seen = -1
        last = b""
        while True:
            await _readable(self._loop, conn)
            try:
                data = conn.recv(want, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:
                raise _Closed from None
            if not data:
                if seen <= 0:
                    raise _Closed
                raise ProxyProtocolError(f"connection closed after {seen} bytes of an "
                                         f"incomplete PROXY protocol header: {last[:40]!r}")
            header = proxy_protocol.parse(data)
            if header is not None:
                _recv_exactly(conn, header.length)
                return header
            if (len(data) >= proxy_protocol.V2_HEADER_LENGTH
                    and data[:12] == proxy_protocol.SIGNATURE_V2):
                want = proxy_protocol.V2_HEADER_LENGTH + int.from_bytes(data[14:16], "big")
            if len(data) == seen:
                await asyncio.sleep(0.005)  # nothing new yet; readiness stays set
            seen = len(data)
            last = data

    def _refuse(self, conn: socket.socket, peer: str, reason: str) -> None:
        self._on_refused(peer, reason)
        try:
            # Read what is waiting so close() sends a FIN, not an RST for unread data.
            conn.recv(65536)
        except OSError:
            pass  # nothing waiting, or already reset: closing is all that is left
        conn.close()


class _Closed(Exception):
    """The client closed before sending any byte."""


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    fut = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(fd)


def _recv_exactly(conn: socket.socket, n: int) -> None:
    # The bytes were peeked, so they are in the socket buffer: recv returns them at once.
    got = 0
    deadline = time.monotonic() + 1.0
    while got < n:
        try:
            chunk = conn.recv(n - got)
        except (BlockingIOError, InterruptedError):
            if time.monotonic() > deadline:
                raise ProxyProtocolError("PROXY header bytes vanished from the socket buffer") from None
            continue
        if not chunk:
            raise ProxyProtocolError("connection closed while reading the PROXY header")
        got += len(chunk)


def _format_peer(addr) -> str:
    if isinstance(addr, tuple):
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(addr)


async def listen(factory: Callable[[ProxyHeader], asyncio.BaseProtocol], host: str, port: int, *,
                 ssl=None, on_refused: Callable[[str, str], None], backlog: int = 1024,
                 header_timeout: float = HEADER_TIMEOUT_S) -> Listener:
    """Listen on host:port; every connection must start with a PROXY protocol header."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setblocking(False)
    return Listener(sock, factory, ssl, on_refused, header_timeout)
