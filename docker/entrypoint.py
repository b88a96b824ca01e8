"""The lblab image's entry point: wait for what a program needs, then become that program.

docker-compose can order start-up by health (``depends_on`` conditions), but a Swarm stack
cannot (``docker stack deploy`` ignores ``depends_on``), and an engine restarting one
container orders nothing. So each container waits for itself, the same way everywhere:

    LBLAB_WAIT_TCP=postgres:5432,redis:6379   every address accepts a connection
    LBLAB_WAIT_MIGRATED=1                     ``manage.py migrate --check`` passes (the
                                              migrate service has applied every migration)
    LBLAB_WAIT_TIMEOUT=300                    seconds before giving up (exit 1, and the
                                              restart policy tries again)

then ``exec``s its command (so signals reach the program itself). Without these variables
it only execs.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def parse_targets(text: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"LBLAB_WAIT_TCP: {item!r} is not HOST:PORT")
        out.append((host, int(port)))
    return out


def tcp_ready(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 2).close()
    except OSError:
        return False
    return True


def migrated() -> bool:
    check = subprocess.run([sys.executable, "manage.py", "migrate", "--check"],
                           capture_output=True)
    return check.returncode == 0


def wait(what: str, ready, deadline: float) -> None:
    said = False
    while not ready():
        if time.monotonic() > deadline:
            print(f"lblab entrypoint: gave up waiting for {what}", file=sys.stderr, flush=True)
            sys.exit(1)
        if not said:
            print(f"lblab entrypoint: waiting for {what}", file=sys.stderr, flush=True)
            said = True
        time.sleep(1)


def main(argv: list[str]) -> None:
    if not argv:
        print("usage: entrypoint.py PROGRAM [ARGS...]", file=sys.stderr)
        sys.exit(2)
    deadline = time.monotonic() + float(os.environ.get("LBLAB_WAIT_TIMEOUT", "300"))
    for host, port in parse_targets(os.environ.get("LBLAB_WAIT_TCP", "")):
        wait(f"{host}:{port}", lambda h=host, p=port: tcp_ready(h, p), deadline)
    if os.environ.get("LBLAB_WAIT_MIGRATED") == "1":
        wait("the database migrations", migrated, deadline)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
