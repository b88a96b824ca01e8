"""Which protocol serves a new connection on an http listener.

Without `http2` it is HTTP/1.1 (proxy.io.l7.L7Connection), as before. With
it, HTTP/2 and HTTP/1.1 share the listener:
- over TLS, the protocol the handshake agreed by ALPN decides (`h2`, else
  HTTP/1.1): `AlpnSwitch` stands where TLSAccept hands the connection over;
- in cleartext, HTTP/2 needs prior knowledge: `PrefaceSniff` reads the first
  bytes and hands the connection to HTTP/2 when they are the client preface
  (`PRI * HTTP/2.0...`, which no HTTP/1.1 request starts with), to HTTP/1.1
  after the first byte that differs. A client that sends nothing is closed
  after timeouts.client_header, as an HTTP/1.1 one would be.
"""
from __future__ import annotations

import asyncio

from proxy.http2.guard import PREFACE
from proxy.http2.server import H2Connection
from proxy.http2.upstream import H1Exchange
from proxy.io import Deadline
from proxy.io.l7 import L7Connection
from proxy.tls import TLSAccept


def http_protocol(server, bound):
    """An asyncio Protocol for one accepted connection of an http listener."""
    if bound.config.http2 is None:
        if bound.tls is not None:
            return TLSAccept(server, bound, lambda: l7_connection(server, bound))
        return l7_connection(server, bound)
    if bound.tls is not None:
        return TLSAccept(server, bound, lambda: AlpnSwitch(server, bound))
    return PrefaceSniff(server, bound)


def l7_connection(server, bound) -> L7Connection:
    conn = L7Connection(server, bound)
    conn.h2_exchange_class = H1Exchange  # reaches protocol: h2 pools too
    return conn


class AlpnSwitch(asyncio.Protocol):
    """After the TLS handshake: h2 by ALPN, else HTTP/1.1."""

    def __init__(self, server, bound):
        self.server = server
        self.bound = bound
        self.scheme_b = b"https"
        self.tls = None  # set by TLSAccept before connection_made

    def connection_made(self, transport) -> None:
        alpn = (self.tls or {}).get("alpn")
        conn = (H2Connection(self.server, self.bound) if alpn == "h2"
                else l7_connection(self.server, self.bound))
        conn.scheme_b = self.scheme_b
        conn.tls = self.tls
        transport.set_protocol(conn)
        conn.connection_made(transport)


class PrefaceSniff(asyncio.Protocol):
    """Cleartext: HTTP/2 with prior knowledge, or HTTP/1.1, by the first bytes."""

    kind = "http"  # for GET /state while undecided

    def __init__(self, server, bound):
        self.server = server
        self.bound = bound
        self.transport = None
        self.buf = b""
        self.timer = Deadline(server.loop, self._on_timer)
        self.done = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections.add(self)
        self.timer.after(self.bound.config.timeouts.client_header)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.buf += data
        n = min(len(self.buf), len(PREFACE))
        if self.buf[:n] == PREFACE[:n] and n < len(PREFACE):
            return  # could still be the preface
        conn = (H2Connection(self.server, self.bound) if self.buf[:n] == PREFACE
                else l7_connection(self.server, self.bound))
        self._hand_over(conn)

    def _hand_over(self, conn) -> None:
        self.done = True
        self.timer.close()  # no cycle through its callback (see Deadline.close)
        self.server.connections.discard(self)
        transport = self.transport
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if self.buf and not transport.is_closing():
            conn.data_received(self.buf)
        self.buf = b""

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc) -> None:
        if not self.done:
            self.done = True
            self.timer.close()
            self.server.connections.discard(self)

    def _on_timer(self) -> None:
        if not self.done:
            # Let HTTP/1.1 answer what it has (408 for a partial head) or close.
            self._hand_over(l7_connection(self.server, self.bound))

    def shutdown(self) -> None:
        if not self.done:
            self.done = True
            self.timer.close()
            self.server.connections.discard(self)
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
