"""Accepting the PROXY protocol on a listener (`listeners.NAME.proxy_protocol`).

`ProxyHeaderAccept` stands in front of the listener's own protocol (HTTP/1.1,
the HTTP/2 sniff, TLS termination, the L4 relay) for each accepted
connection. It refuses a peer outside `proxy_protocol.trusted` at once, reads
the v1 or v2 header (proxy/proxyproto.py parses it) within
timeouts.client_header, and then hands the connection over with a transport
whose `peername` is the address the header names - so every later step
(balancing, stickiness, events, X-Forwarded-For, a PROXY header sent on to the
backends) sees the real client without knowing a header was there. The trusted
sender and the header version stay readable as `get_extra_info("proxy_header")`.

A LOCAL (v2) or UNKNOWN (v1) header - the sender's own health check - keeps
the real peer, as the spec says.

On a listener that terminates TLS the header comes first, in cleartext, and
the ClientHello after it (HAProxy's `accept-proxy` on a `bind ... ssl`): the
listener's protocol is then TLSAccept, which puts the TLS layer on this same
connection when it is handed over; bytes that came in the same read as the
header (the start of the ClientHello) are fed to that layer (`feed`). Its
handshake events and every request over it name the client the header gave.
"""
from __future__ import annotations

import asyncio
import logging

from proxy import proxyproto, trust
from proxy.events import Warning as WarningEvent
from proxy.io import Deadline

log = logging.getLogger("proxy.accept")

MAX_HEADER = 16 + 65535  # v2: 16 bytes and a 16-bit length


def _fmt(ip: str, port) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class PeerTransport:
    """The accepted transport, with the client address the PROXY header gave."""

    def __init__(self, transport, peer: tuple, info: dict):
        self._transport = transport
        self._peer = peer
        self._info = info
        # The hot-path methods, bound once (no __getattr__ per call).
        for name in ("write", "writelines", "pause_reading", "resume_reading", "is_closing",
                     "close", "abort", "can_write_eof", "write_eof", "is_reading",
                     "get_write_buffer_size", "set_write_buffer_limits", "set_protocol",
                     "get_protocol"):
            method = getattr(transport, name, None)
            if method is not None:
                setattr(self, name, method)

    def get_extra_info(self, name, default=None):
        if name == "peername":
            return self._peer
        if name == "proxy_header":
            return self._info
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name):
        return getattr(self._transport, name)


def feed(protocol, data: bytes) -> None:
    """Hand bytes already read to `protocol`, buffered (SSLProtocol) or not."""
    # uvloop's SSLProtocol has get_buffer without subclassing BufferedProtocol:
    # the test uvloop itself uses.
    if isinstance(protocol, asyncio.Protocol) or not hasattr(protocol, "get_buffer"):
        protocol.data_received(data)
        return
    view = memoryview(data)
    while view:
        buf = protocol.get_buffer(len(view))
        n = min(len(buf), len(view))
        if n == 0:
            raise RuntimeError(f"{type(protocol).__name__}.get_buffer gave no room")
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


class ProxyHeaderAccept(asyncio.Protocol):
    kind = "proxy-header"  # for GET /state's connection counts while reading it

    def __init__(self, server, bound, make):
        self.server = server
        self.bound = bound
        self.make = make
        self.transport = None
        self.buf = b""
        self.done = False
        self.peer = ("?", 0)
        self.timer = Deadline(server.loop, self._on_timer)

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("?", 0)
        settings = self.bound.config.proxy_protocol
        if not trust.is_trusted(self.peer[0], trust.networks(tuple(settings.trusted))):
            self.done = True
            self._refuse(f"{_fmt(*self.peer)} is not in listeners.{self.bound.name}."
                         "proxy_protocol.trusted: connection refused (only the balancers "
                         "in front may connect here, and their PROXY header is believed)")
            return
        self.server.connections.add(self)
        self.timer.after(self.bound.config.timeouts.client_header)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        self.buf += data
        try:
            header = proxyproto.parse(self.buf)
        except proxyproto.ProxyProtocolError as exc:
            self._finish()
            self._refuse(f"{_fmt(*self.peer)}: {exc}")
            return
        if header is None:
            if len(self.buf) > MAX_HEADER:
                self._finish()
                self._refuse(f"{_fmt(*self.peer)}: PROXY header longer than {MAX_HEADER} bytes")
            return
        self._finish()
        rest = self.buf[header.length:]
        self.buf = b""
        source = header.source if header.command == proxyproto.PROXY else None
        if source is not None and source[1] is None:
            source = None  # a UNIX socket path is no client address
        info = {"version": header.version, "command": header.command,
                "via": _fmt(*self.peer),
                "source": proxyproto.format_address(source) if source else None}
        peer = (source[0], source[1]) if source else self.peer
        wrapped = PeerTransport(self.transport, peer, info)
        inner = self.make()
        self.transport.set_protocol(inner)
        inner.connection_made(wrapped)
        if rest and not self.transport.is_closing():
            # Whoever reads the connection now: the listener's protocol, or the TLS
            # layer TLSAccept put under it (the ClientHello may have come with the header).
            feed(self.transport.get_protocol(), rest)

    def _finish(self) -> None:
        self.done = True
        self.timer.close()  # no cycle through its callback (see Deadline.close)
        self.server.connections.discard(self)

    def _refuse(self, why: str) -> None:
        log.warning("listener %s: %s", self.bound.name, why)
        try:
            self.server.bus.publish(WarningEvent(source="proxy_protocol", message=(
                f"listener {self.bound.name}: {why}")))
        except Exception:
            log.exception("publishing a proxy_protocol warning failed")
        self.transport.abort()

    def _on_timer(self) -> None:
        if not self.done:
            self._finish()
            self._refuse(f"{_fmt(*self.peer)}: no complete PROXY header within "
                         f"{self.bound.config.timeouts.client_header:g}s "
                         "(timeouts.client_header)")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc) -> None:
        if not self.done:
            self._finish()

    def shutdown(self) -> None:
        if not self.done:
            self._finish()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def live(self, now: float):
        return None
