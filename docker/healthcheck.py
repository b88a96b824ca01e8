"""Container health checks without curl in the image: ``python docker/healthcheck.py URL``.

``http://host:port/path`` is healthy when it answers 2xx within the timeout; ``tcp://host:port``
when it accepts a connection. Exit status 0 healthy, 1 not (with the reason on stderr), as
the engine's HEALTHCHECK expects. Several targets: all must be healthy.
"""
from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

TIMEOUT = 3.0


def check(target: str) -> str | None:
    """None when healthy, else why not."""
    parts = urlsplit(target)
    try:
        if parts.scheme == "tcp":
            socket.create_connection((parts.hostname, parts.port), TIMEOUT).close()
            return None
        with urllib.request.urlopen(target, timeout=TIMEOUT) as resp:
            return None if 200 <= resp.status < 300 else f"{target}: status {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"{target}: status {exc.code}"
    except OSError as exc:
        return f"{target}: {exc}"


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
