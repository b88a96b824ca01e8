"""The error contract: every response the proxy makes itself, as one table.

Each row says which status the client gets, the short code sent in the
`X-LBLab-Error` header (so a learner can tell a proxy-made 502 from a 502 the
backend sent: backends' own responses never carry it), the two-letter
termination code of the request event, when it happens and what to change.

Termination codes follow HAProxy's spirit. First letter, who ended the
request: C client, S server (backend), P proxy, - nobody (normal end); s (lower
case, as HAProxy writes it) a timeout on the server side: sQ, the queue timeout.
Second letter, in which phase: R reading the request, Q picking a backend
(queue), C connecting to it, H waiting for the response headers, D relaying
the response data, - done.

`docs/errors.md` is rendered from this module (`python -m proxy.errors >
docs/errors.md`); a test keeps the two in step.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProxyError:
    code: str  # X-LBLab-Error value
    status: int
    termination: str
    when: str
    fix: str
    closes: bool = True  # the client connection is closed after the response


ERRORS: dict[str, ProxyError] = {e.code: e for e in [
    ProxyError("bad-request", 400, "PR",
               "The request line or a header is malformed: not HTTP/1.x, a header name "
               "that is not a token (control characters, spaces, a space before the "
               "colon), a folded header line, invalid characters in a value, an HTTP/1.1 "
               "request without Host or with two, a Host that is not host[:port] (spaces, "
               "quotes, slashes), or an upgrade request (Upgrade + Connection: upgrade) "
               "that carries a body. Requests before it on the connection are answered "
               "first.",
               "Fix the client: send a valid HTTP/1.1 request head."),
    ProxyError("underscore-header", 400, "PR",
               "A header name with an underscore reads as a header the proxy manages once "
               "'_' is taken for '-' (Transfer_Encoding, Content_Length, Host, Connection, "
               "Upgrade, TE, Expect, X_Forwarded_For, Forwarded, X_Request_Id, Proxy_*...). "
               "CGI and WSGI backends map '_' and '-' to the same variable, so forwarding "
               "it would let a client smuggle framing or spoof forwarding headers. Other "
               "names with underscores pass unchanged.",
               "Spell the header with hyphens (Transfer-Encoding), or rename your own "
               "header."),
    ProxyError("ambiguous-length", 400, "PR",
               "The body length is ambiguous: Content-Length together with "
               "Transfer-Encoding, several Content-Length headers (even equal ones), a "
               "Content-Length that is not digits, a Transfer-Encoding that does not end in "
               "chunked or names chunked twice, or any Transfer-Encoding in an HTTP/1.0 "
               "request (RFC 9112 6.1). This is how request smuggling starts, so the "
               "connection is closed.",
               "Send exactly one of Content-Length or Transfer-Encoding: chunked."),
    ProxyError("transfer-coding", 501, "PR",
               "Transfer-Encoding names a coding before chunked (gzip, deflate...): the "
               "proxy decodes chunked and re-frames the body itself, so any other coding "
               "would reach the backend unannounced (RFC 9112 6.1 answers 501).",
               "Send Transfer-Encoding: chunked alone (compress with Content-Encoding "
               "instead)."),
    ProxyError("bad-chunk", 400, "PR",
               "A chunked request body has an invalid chunk size or framing (a size with "
               "spaces or a sign, a bare LF, no CRLF after the data), or its framing "
               "(sizes, chunk extensions, trailers) takes more than 64 KiB plus 8 bytes per "
               "data byte. Chunk extensions and trailer fields are otherwise read and "
               "dropped: the proxy re-frames the body without them.",
               "Fix the client's chunked encoding (hex size, CRLF after each chunk, a "
               "final 0-size chunk)."),
    ProxyError("unsupported-method", 501, "PR",
               "CONNECT: the proxy is a reverse proxy, not a forward proxy.",
               "Send the request to the backend's URL through the listener instead."),
    ProxyError("http-version", 505, "PR",
               "The request line names an HTTP version other than 1.0 or 1.1, including "
               "the HTTP/2 connection preface (PRI * HTTP/2.0) of a client that assumes "
               "HTTP/2 with prior knowledge: this listener speaks HTTP/1.1 only. The "
               "answer is an HTTP/1.1 505 response.",
               "Speak HTTP/1.1 (or 1.0) to this listener (curl: drop --http2-prior-knowledge)."),
    ProxyError("header-timeout", 408, "PR",
               "The client did not send a complete request head within "
               "listeners.NAME.timeouts.client_header (a slow-headers client cannot hold "
               "the proxy).",
               "Send the head at once, or raise timeouts.client_header."),
    ProxyError("body-timeout", 408, "PR",
               "The client sent no request-body byte for listeners.NAME.timeouts.request_body.",
               "Send the body without long pauses, or raise timeouts.request_body."),
    ProxyError("body-too-slow", 408, "PR",
               "The request body came in too slowly as a whole: not complete within "
               "listeners.NAME.timeouts.request_body_total, or slower on average than "
               "listeners.NAME.timeouts.min_body_rate bytes per second (after a first "
               "timeouts.request_body of grace). A client that trickles a byte at a time "
               "cannot hold a connection. Time the proxy itself stops reading "
               "(back-pressure) is not counted.",
               "Send the body faster, or raise request_body_total / lower min_body_rate "
               "(0 turns either off)."),
    ProxyError("body-too-large", 413, "PR",
               "The request body is larger than listeners.NAME.limits.max_body_bytes "
               "(refused up front by Content-Length, or while a chunked body streams).",
               "Send a smaller body or raise limits.max_body_bytes."),
    ProxyError("headers-too-large", 431, "PR",
               "The request line and headers are larger than "
               "listeners.NAME.limits.max_header_bytes.",
               "Send fewer or smaller headers (often: too many cookies), or raise "
               "limits.max_header_bytes."),
    ProxyError("no-route", 404, "PR",
               "No route of the listener matched the request (host, path, method, "
               "headers, query, cookies). The body names the listener, host and path.",
               "Add a route that matches, or a catch-all route with match: {}.",
               closes=False),
    ProxyError("no-backend", 503, "PQ",
               "The pool has no eligible backend: all are unhealthy, ejected, draining or "
               "in maintenance, or the pool is empty. The body says which state each "
               "backend is in.",
               "Bring a backend back (fix it, end its maintenance, add one), or set "
               "panic_threshold to fail open.",
               closes=False),
    ProxyError("backend-limit", 503, "PQ",
               "Every eligible backend is at its connection limit (pools.NAME.backends[]."
               "max_connections, else pools.NAME.max_connections_per_backend requests in "
               "flight) and the pool has no queue. The body lists each backend's in-flight "
               "count and limit.",
               "Add backends, raise the limit, or give the pool a queue: to let requests "
               "wait for a free slot.",
               closes=False),
    ProxyError("queue-full", 503, "PQ",
               "Every eligible backend is at its connection limit and pools.NAME.queue."
               "max_length requests already wait in the pool's queue (HAProxy's maxconn + "
               "queue): one more is refused at once rather than wait behind them.",
               "Add backends, raise the backends' max_connections, or raise "
               "queue.max_length if the backends drain the queue fast enough.",
               closes=False),
    ProxyError("queue-timeout", 503, "sQ",
               "The request waited pools.NAME.queue.timeout in the pool's queue and no "
               "backend slot came free. The event's queue says its position on arrival and "
               "the time it waited.",
               "Add backends or raise their max_connections (the backends are the "
               "bottleneck), or raise queue.timeout if clients can wait longer.",
               closes=False),
    ProxyError("connect-failed", 503, "PC",
               "No connection to a backend could be made within pools.NAME.timeouts.connect "
               "(refused, unreachable, timed out), after the allowed retries to other "
               "backends. (nginx answers 502 to a refused connect and 504 on a connect "
               "timeout; HAProxy and Envoy 503 to both.)",
               "Start the backend or fix its address; health checks take it out of "
               "rotation so clients stop seeing this.",
               closes=False),
    ProxyError("backend-closed", 502, "SH",
               "The backend closed or reset the connection before sending a complete "
               "response head.",
               "Look at the backend: it crashed, or closes keep-alive connections sooner "
               "than pools.NAME.timeouts.backend_idle.",
               closes=False),
    ProxyError("bad-response", 502, "SH",
               "The backend sent something that is not a valid HTTP/1.x response.",
               "Fix the backend (or point the pool at the right port).",
               closes=False),
    ProxyError("backend-tls", 502, "SC",
               "The TLS handshake with the backend failed (pools.NAME.tls): its certificate "
               "is not trusted by tls.ca, does not name tls.server_name, it does not "
               "speak TLS on that port, or (protocol: h2) it does not agree to h2 by ALPN.",
               "Give the backend a certificate from the lab CA for the name the proxy checks "
               "(python -m proxy pki init), fix tls.ca / tls.server_name, point the pool "
               "at its TLS port, or use protocol: http1 for a backend without HTTP/2.",
               closes=False),
    ProxyError("response-timeout", 504, "PH",
               "The backend did not send the response head within "
               "pools.NAME.timeouts.response_header after the request was sent.",
               "Make the backend faster, or raise timeouts.response_header.",
               closes=False),
    ProxyError("drain-cut", 502, "PD",
               "The backend was drained and this request was still in flight at the drain "
               "deadline (deregistration_delay): the proxy cut it.",
               "Raise pools.NAME.deregistration_delay above your longest request.",
               closes=True),
    ProxyError("internal", 500, "P-",
               "A bug in the proxy while handling this request (the proxy keeps serving).",
               "Report it with the request id from X-Request-Id."),
]}


# Termination codes, including the ones that produce no proxy-made response.
TERMINATIONS: dict[str, str] = {
    "--": "Clean finish: the response went out completely.",
    "CR": "The client closed the connection while sending the request (head or body).",
    "CH": "The client closed the connection while the proxy waited for the backend's "
          "response head.",
    "CD": "The client closed the connection during the response body (the backend "
          "connection is closed, not reused).",
    "SH": "The backend closed or reset the connection before a complete response head "
          "(502 bad-response or backend-closed).",
    "SD": "The backend closed, reset or went silent (longer than "
          "timeouts.response_header) in the middle of the response body; the client "
          "connection is closed because its response cannot be completed.",
    "PR": "The proxy refused the request (400, 404, 408, 413, 431, 501, 505).",
    "PQ": "No eligible backend, or every backend at its limit with no room in the queue "
          "(503 no-backend, backend-limit, queue-full).",
    "sQ": "A timeout expired while the request waited in the pool's queue for a free "
          "backend slot (503 queue-timeout); as in HAProxy, a lower-case letter means a "
          "timeout on that side.",
    "PC": "Connecting to the backends failed, retries included (503).",
    "SC": "The backend's TLS handshake failed: untrusted or wrong certificate, or no TLS "
          "on that port (502 backend-tls).",
    "PH": "The backend's response head did not come in time (504).",
    "PD": "The proxy cut the request: the backend was drained and the deadline passed.",
    "P-": "An internal proxy error (500).",
}


def error(code: str) -> ProxyError:
    return ERRORS[code]


def render_markdown() -> str:
    """docs/errors.md: the tables above, for humans."""
    lines = [
        "# Errors the proxy makes, and termination codes",
        "",
        "<!-- Generated by `python -m proxy.errors > docs/errors.md` from proxy/errors.py;"
        " edit the table there. -->",
        "",
        "Every response the proxy makes itself carries `X-LBLab-Error: <code>` and a JSON "
        "body `{\"error\", \"status\", \"message\", \"request_id\"}`; its request event has "
        "`proxy_error: true`. A 5xx the *backend* sends passes through unchanged, without "
        "that header: that is how to tell who failed.",
        "",
        "| Status | X-LBLab-Error | Termination | When | What to change |",
        "|---|---|---|---|---|",
    ]
    for e in ERRORS.values():
        closes = " The client connection is then closed." if e.closes else ""
        lines.append(f"| {e.status} | `{e.code}` | `{e.termination}` | {e.when}{closes} "
                     f"| {e.fix} |")
    lines += [
        "",
        "## Termination codes",
        "",
        "Each request event (access log, `GET /events`, `GET /requests/<id>`) has a "
        "two-letter `termination`, in the spirit of HAProxy's. First letter, who ended "
        "the request: `C` client, `S` server (backend), `P` proxy, `-` nobody (a normal "
        "end); lower-case `s`: a timeout on the server side (HAProxy's spelling). Second letter, the phase: `R` request, `Q` picking a backend, `C` "
        "connecting, `H` waiting for response headers, `D` relaying the response data, "
        "`-` done.",
        "",
        "| Code | Meaning |",
        "|---|---|",
    ]
    for code, meaning in TERMINATIONS.items():
        lines.append(f"| `{code}` | {meaning} |")
    lines += [
        "",
        "## Retries",
        "",
        "A failed attempt is retried (at most `pools.NAME.retries` times, each to a "
        "different backend when another one is eligible) only when it is safe: the "
        "connection could not be made, or the request is idempotent (GET, HEAD, OPTIONS, "
        "PUT, DELETE, TRACE), the proxy still holds all of its body (64 KiB at most), and "
        "the backend closed or reset the connection before any response byte: on a "
        "*reused* keep-alive connection (the keep-alive race) as on a fresh one (a "
        "backend that crashed or was restarted under the request). A non-idempotent "
        "request (POST, PATCH) is never resent once written. Each retry is listed in the "
        "event's `retries` with the backend and the error. A pool with a "
        "`retry_budget` also caps the requests retrying at once (a share of its active "
        "requests, with a floor); a retry over it is skipped, the client gets the "
        "failed attempt's error, and the event's `retry_budget` says so.",
        "",
        "## Request framing",
        "",
        "What the proxy accepts from clients, and what it forwards (RFC 9112). Where "
        "two readings of a request are possible, it refuses the request rather than "
        "pick one, because a backend that picks the other one is how request smuggling "
        "works. The proxy always writes the framing of what it forwards itself "
        "(Content-Length, or chunked), never the client's.",
        "",
        "| Input | What happens |",
        "|---|---|",
        "| Header name that is not a token (control characters, spaces, space before "
        "the colon), folded (obs-fold) header line, bare LF line ends | 400 "
        "`bad-request` |",
        "| Header name with `_` that reads as a managed header once `_` is `-` "
        "(`Transfer_Encoding`, `Content_Length`, `X_Forwarded_For`...) | 400 "
        "`underscore-header`; other names with `_` pass unchanged |",
        "| Whitespace around a header value | Removed (leading and trailing spaces and "
        "tabs are not part of the value) |",
        "| Control characters (NUL, CR alone, DEL...) in a header value | 400 "
        "`bad-request` |",
        "| `Host` with spaces or other characters no host can have; two `Host` "
        "headers; none in HTTP/1.1 | 400 `bad-request` |",
        "| Content-Length and Transfer-Encoding together, two Content-Lengths, a "
        "Content-Length that is not digits | 400 `ambiguous-length` |",
        "| Transfer-Encoding other than exactly `chunked` | Not ending in chunked or "
        "chunked twice: 400 `ambiguous-length`; another coding before chunked (`gzip, "
        "chunked`): 501 `transfer-coding`; any Transfer-Encoding in HTTP/1.0, or a tab "
        "after `chunked` (which llhttp reads as another coding): 400 `ambiguous-length` |",
        "| Chunk extensions (`5;name=value`) and trailer fields | Read and dropped "
        "(bounded: see `bad-chunk`) |",
        "| Upgrade request with a body | 400 `bad-request` (never held waiting for "
        "a body the backend would not get) |",
        "| HTTP/2 preface `PRI * HTTP/2.0` on an HTTP/1.1 listener | 505 "
        "`http-version` |",
        "| Bytes after a request that closes the connection (`Connection: close`, "
        "HTTP/1.0 without keep-alive) | That request is answered; the bytes are "
        "ignored and the connection closed |",
        "| A malformed request after valid pipelined ones | The valid ones are answered "
        "in order first; the malformed one gets its error, then the connection closes |",
        "",
        "## Timeouts",
        "",
        "| Setting | Effect |",
        "|---|---|",
        "| `listeners.NAME.timeouts.client_header` | Whole request head must arrive in "
        "this time after its first byte (the first request of a connection: after "
        "accept); else 408 `header-timeout`. |",
        "| `listeners.NAME.timeouts.request_body` | Longest pause between request-body "
        "bytes; else 408 `body-timeout`. |",
        "| `listeners.NAME.timeouts.request_body_total` | The whole request body must "
        "arrive within this time after the head (0s: no limit, the default); else 408 "
        "`body-too-slow`. |",
        "| `listeners.NAME.timeouts.min_body_rate` | Bytes per second a request body "
        "must average, after a grace of `request_body` (0: no minimum; default 256); else "
        "408 `body-too-slow`. A body of up to 64 KiB is read whole before a backend is "
        "picked, so a slow client does not hold a backend connection meanwhile (a client "
        "sending `Expect: 100-continue` gets the 100 from the proxy). |",
        "| `listeners.NAME.timeouts.client_idle` | An idle keep-alive client connection is "
        "closed after this (silently: no request, no response). |",
        "| `listeners.NAME.timeouts.tunnel_idle` | An upgraded (WebSocket) connection idle "
        "this long in both directions is closed. |",
        "| `pools.NAME.timeouts.connect` | TCP connect to a backend; a failure is retried "
        "(503 `connect-failed` when none is left). |",
        "| `pools.NAME.timeouts.response_header` | From request sent to response head: 504 "
        "`response-timeout`. Also the longest silence allowed in the middle of a "
        "response body (`SD`), like nginx's proxy_read_timeout. |",
        "| `pools.NAME.timeouts.backend_idle` | A pooled keep-alive backend connection idle "
        "longer than this is closed, not reused. |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown(), end="")
