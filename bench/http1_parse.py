"""CPU cost of reading one request head (proxy.http1.parse.RequestReader), no sockets.

The request reader runs once per request on the proxy's hot path; its framing
checks (underscore names, Host characters, Transfer-Encoding codings, chunk
framing bound) must stay cheap. This prints microseconds of CPU per request
(process time, best of --rounds) for a typical browser-like GET with eight
headers and a small JSON POST.

    .venv/bin/python bench/http1_parse.py
    .venv/bin/python bench/http1_parse.py --requests 100000 --rounds 7
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.http1.parse import RequestReader  # noqa: E402

GET = (b"GET /api/items?id=42 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: wrk\r\n"
       b"Accept: */*\r\nAccept-Encoding: gzip\r\nCookie: a=b; c=d\r\nX-Trace: abc \r\n"
       b"Connection: keep-alive\r\n\r\n")
POST = (b"POST /api/items HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/json\r\n"
        b"Content-Length: 20\r\n\r\n" + b"x" * 20)


class _Sink:
    def on_request_head(self, head):
        pass

    def on_request_body(self, data):
        pass

    def on_request_complete(self):
        pass


def per_request_us(data: bytes, requests: int, rounds: int) -> float:
    reader = RequestReader(_Sink())
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(requests):
            reader.feed(data)
        best = min(best, time.process_time() - started)
    return best / requests * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    for name, data in (("GET, 8 headers", GET), ("POST, 20-byte body", POST)):
        us = per_request_us(data, args.requests, args.rounds)
        print(f"{name:20s} {us:6.2f} us CPU per request (best of {args.rounds} x "
              f"{args.requests})")


if __name__ == "__main__":
    main()
