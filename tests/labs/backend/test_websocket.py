"""The toy backend's WebSocket handshake, without sockets (labs/backend/websocket.py)."""
from labs.backend.websocket import handshake_response, is_websocket_upgrade

HANDSHAKE = {"upgrade": "websocket", "connection": "keep-alive, Upgrade",
             "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13"}


def test_the_accept_token_is_rfc_6455s_example():
    # RFC 6455 section 1.3: this key must be answered with this accept value.
    assert handshake_response("dGhlIHNhbXBsZSBub25jZQ==") == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def test_only_a_full_websocket_handshake_on_ws_is_upgraded():
    assert is_websocket_upgrade(b"GET", b"/ws", HANDSHAKE)
    assert is_websocket_upgrade(b"GET", b"/ws/", HANDSHAKE)
    assert not is_websocket_upgrade(b"POST", b"/ws", HANDSHAKE)
    assert not is_websocket_upgrade(b"GET", b"/chat", HANDSHAKE)
    assert not is_websocket_upgrade(b"GET", b"/ws", {**HANDSHAKE, "upgrade": "h2c"})
    no_key = {k: v for k, v in HANDSHAKE.items() if k != "sec-websocket-key"}
    assert not is_websocket_upgrade(b"GET", b"/ws", no_key)  # answered as plain HTTP
