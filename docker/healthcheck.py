"""Container health checks without curl in the image: ``python docker/healthcheck.py URL``.

``http://host:port/path`` is healthy when it answers 2xx within the timeout; ``tcp://host:port``
when it accepts a connection. Exit status 0 healthy, 1 not (with the reason on stderr), as
the engine's HEALTHCHECK expects. Several targets: all must be healthy.
"""
from __future__ import annotations

import socket
import sys

TIMEOUT = 5.0


def split(target: str) -> tuple[str, str, int, str]:
    """'http://host:port/path' -> (scheme, host, port, path); only what the checks use."""
    scheme, _, rest = target.partition("://")
    hostport, slash, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    return scheme, host, int(port), slash + path


def check(target: str) -> str | None:
    """None when healthy, else why not. Plain sockets: a health check runs every few
    seconds in every container, so it imports as little as it can (no urllib, no ssl)."""
    try:
        scheme, host, port, path = split(target)
        with socket.create_connection((host, port), TIMEOUT) as sock:
            if scheme == "tcp":
                return None
            sock.settimeout(TIMEOUT)
            sock.sendall(f"GET {path or '/'} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            head = sock.recv(64).decode("latin-1")
    except (OSError, ValueError) as exc:
        return f"{target}: {exc}"
    fields = head.split(" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        return f"{target}: not an HTTP answer ({head[:30]!r})"
    code = int(fields[1])
    return None if 200 <= code < 300 else f"{target}: status {code}"


def main(targets: list[str]) -> int:
    if not targets:
        print("usage: healthcheck.py http://HOST:PORT/PATH | tcp://HOST:PORT ...", file=sys.stderr)
        return 2
    problems = [p for p in map(check, targets) if p]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
