"""WebSocket on the toy backend: ``GET /ws`` with ``Upgrade: websocket`` (RFC 6455).

The opening handshake is answered here (101 with the Sec-WebSocket-Accept of RFC 6455
section 4.2.2, computed by wsproto); after it wsproto frames the connection: the backend
greets with one text message naming itself (``{"backend": "b1"}``), echoes every message
back, answers pings with pongs and answers a close with a close. A chat user's tunnel is
this connection, held open for as long as the client wants: the lab "websocket-reconnect-
storm" holds dozens of them and watches where they land when one backend is drained.
"""
from __future__ import annotations

import json

from wsproto.connection import Connection as WsConnection, ConnectionType
from wsproto.events import (BytesMessage, CloseConnection, Ping, TextMessage)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError, generate_accept_token

PATH = "/ws"


def is_websocket_upgrade(method: bytes, path: bytes, headers: dict[str, str]) -> bool:
    """A WebSocket opening handshake for /ws (headers: lower-case names)."""
    return (method == b"GET" and path.rstrip(b"/") == PATH.encode()
            and headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in headers.get("connection", "").lower()
            and bool(headers.get("sec-websocket-key")))


def handshake_response(key: str) -> bytes:
    """The 101 answer to a handshake carrying Sec-WebSocket-Key ``key``."""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + generate_accept_token(key.strip().encode("ascii")) + b"\r\n\r\n")


class WebSocketSession:
    """One upgraded connection: bytes in, wsproto events, answers written to ``transport``."""

    def __init__(self, transport, backend_name: str):
        self.transport = transport
        self.ws = WsConnection(ConnectionType.SERVER)
        self.closed = False
        self._send(TextMessage(data=json.dumps({"backend": backend_name})))

    def _send(self, event) -> None:
        if not self.closed:
            self.transport.write(self.ws.send(event))

    def feed(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    self._send(type(event)(data=event.data))
                elif isinstance(event, Ping):
                    self._send(event.response())
                elif isinstance(event, CloseConnection):
                    self._send(event.response())
                    self.close()
        except (LocalProtocolError, RemoteProtocolError):
            self.close()  # a broken frame: nothing sensible to say on this connection

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()
