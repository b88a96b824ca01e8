"""A real proxy in a thread, a raw recording backend, raw clients: for the HTTP edge tests.

- `EdgeProxy(config)`: a ProxyServer running on its own event loop in a
  thread, so tests (and hypothesis, which wants plain functions) drive it with
  blocking sockets. `.port()`, `.apply(config)` (like PUT /config), `.events`.
- `RecordingBackend`: a TCP backend that keeps every byte it receives, per
  connection, and answers each request (found with httptools) with 200 and a
  body naming the request's target. Tests then parse what it recorded
  independently, under a strict parser (h11) and a lenient one (httptools),
  and compare with what the client sent: the differential check.
- `exchange(port, data)`: send exact bytes, read responses until the proxy
  closes or `count` responses came.

Every socket has a timeout; every wait is bounded.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field

import h11
import httptools

from proxy.config import parse_config
from proxy.server import ProxyServer

TIMEOUT = 5.0


# ====================================================================== proxy

class EdgeProxy:
    def __init__(self, config: dict):
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.server: ProxyServer | None = None
        self.events: list = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "EdgeProxy":
        self._thread.start()
        self.server = ProxyServer(parse_config(self.config))
        self.server.bus.add_sink(self.events.append)
        self.call(self.server.start())
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call(self.server.stop(grace=0.2))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()

    def call(self, coro, timeout: float = 20.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def port(self, listener: str = "web") -> int:
        return self.server.listeners[listener].address[1]

    def apply(self, config: dict) -> None:
        """Replace the running config, the way PUT /config does."""
        async def apply():
            self.server.runtime.apply(parse_config(config))
        self.call(apply())

    def requests(self, request_id: str | None = None) -> list:
        out = [e for e in list(self.events) if type(e).__name__ == "RequestEvent"]
        if request_id is not None:
            out = [e for e in out if e.request_id == request_id]
        return out


def proxy_config(backends: list[tuple[str, int]], listener: dict | None = None,
                 pool: dict | None = None) -> dict:
    """One `web` listener forwarding everything to pool `p` (the given backend addresses)."""
    return {
        "admin": {"listen": "127.0.0.1:0"},
        "listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"], **(listener or {})}},
        "routes": {"all": {"forward": "p"}},
        "pools": {"p": {"backends": [{"name": f"b{i + 1}", "address": f"{h}:{p}"}
                                     for i, (h, p) in enumerate(backends)],
                        **(pool or {})}},
    }


# ====================================================================== recording backend

class RecordingBackend:
    """Records every byte per connection and answers each request with 200."""

    def __init__(self, reply=None):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.streams: list[bytearray] = []
        self.lock = threading.Lock()
        self.reply = reply  # optional callable(target: bytes, conn) -> bytes | None
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            stream = bytearray()
            with self.lock:
                self.streams.append(stream)
            threading.Thread(target=self._serve, args=(conn, stream), daemon=True).start()

    def _serve(self, conn: socket.socket, stream: bytearray) -> None:
        done: list[bytes] = []
        target: list[bytes] = []

        class Sink:
            def on_url(self, url):
                target.append(url)

            def on_message_complete(self):
                done.append(b"".join(target))
                target.clear()

        parser = httptools.HttpRequestParser(Sink())
        conn.settimeout(30)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    stream += data
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    return
                except httptools.HttpParserError:
                    return  # garbage reached the backend: the differential check says so
                for tgt in done:
                    answer = self.reply(tgt, conn) if self.reply else None
                    if answer is None:
                        body = b"ok " + tgt
                        answer = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b"
                                  % (len(body), body))
                    if answer:
                        try:
                            conn.sendall(answer)
                        except OSError:
                            return
                done.clear()

    def mark(self) -> list[int]:
        """Where each connection's record stands now (a message boundary between tests)."""
        with self.lock:
            return [len(s) for s in self.streams]

    def since(self, mark: list[int]) -> list[bytes]:
        """Bytes each connection received after `mark` (connections opened since included)."""
        with self.lock:
            out = []
            for i, s in enumerate(self.streams):
                start = mark[i] if i < len(mark) else 0
                if len(s) > start:
                    out.append(bytes(s[start:]))
            return out

    def close(self) -> None:
        self.closed = True
        self.sock.close()


# ====================================================================== parsing what arrived

@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]  # lower-case names, in order
    body: bytes = b""

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


@dataclass
class Parsed:
    requests: list[Seen] = field(default_factory=list)
    error: str | None = None


def parse_strict(data: bytes) -> Parsed:
    """h11 as a server: the strict reading of a backend's input."""
    out = Parsed()
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")  # no more bytes: an incomplete message is an error
    current: Seen | None = None
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            out.error = f"h11: {exc}"
            return out
        if event is h11.NEED_DATA or event is h11.PAUSED:
            if current is not None:
                out.error = "h11: incomplete message"
            return out
        if isinstance(event, h11.ConnectionClosed):
            return out
        if isinstance(event, h11.Request):
            current = Seen(event.method.decode(), event.target.decode("latin-1"),
                           [(n.decode().lower(), v.decode("latin-1"))
                            for n, v in event.headers.raw_items()])
        elif isinstance(event, h11.Data):
            current.body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            out.requests.append(current)
            current = None
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()


def parse_lenient(data: bytes) -> Parsed:
    """httptools (llhttp) as most Python backends use it: the lenient reading."""
    out = Parsed()

    class Sink:
        def __init__(self):
            self.cur: Seen | None = None
            self.url = b""

        def on_message_begin(self):
            self.cur = Seen("", "", [])
            self.url = b""

        def on_url(self, url):
            self.url += url

        def on_header(self, name, value):
            self.cur.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

        def on_headers_complete(self):
            self.cur.method = parser.get_method().decode()
            self.cur.target = self.url.decode("latin-1")

        def on_body(self, body):
            self.cur.body += body

        def on_message_complete(self):
            out.requests.append(self.cur)
            self.cur = None

    sink = Sink()
    parser = httptools.HttpRequestParser(sink)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError as exc:
        out.error = f"httptools: {exc}"
    if sink.cur is not None and out.error is None:
        out.error = "httptools: incomplete message"
    return out


# ====================================================================== clients

@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def read_replies(sock: socket.socket, count: int | None, timeout: float = TIMEOUT,
                 head_request: bool = False) -> tuple[list[Reply], bool]:
    """Responses from `sock` until `count` came or it closed: (replies, closed)."""
    replies: list[Reply] = []
    state: dict = {}

    class Sink:
        def on_message_begin(self):
            state["headers"] = {}
            state["body"] = b""

        def on_header(self, name, value):
            state["headers"][name.decode("latin-1").lower()] = value.decode("latin-1")

        def on_headers_complete(self):
            if head_request:
                return 1  # tells llhttp the response has no body
            return None

        def on_body(self, body):
            state["body"] += body

        def on_message_complete(self):
            replies.append(Reply(parser.get_status_code(), state["headers"], state["body"]))

    parser = httptools.HttpResponseParser(Sink())
    deadline = time.monotonic() + timeout
    closed = False
    while count is None or len(replies) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not data:
            closed = True
            try:
                parser.feed_data(b"")
            except httptools.HttpParserError:
                pass
            break
        parser.feed_data(data)
    return replies, closed


def exchange(port: int, pieces: list[bytes] | bytes, count: int | None = None,
             timeout: float = TIMEOUT) -> tuple[list[Reply], bool]:
    """Send `pieces` (each one sendall) on a new connection; read replies (see read_replies)."""
    if isinstance(pieces, bytes):
        pieces = [pieces]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                break
        return read_replies(sock, count, timeout)
