"""Instructions the proxy executes per L7 keep-alive request (valgrind callgrind, user space).

The L7 twin of bench/l4_instructions.py: on a shared 2-core machine CPU time per
request moves by tens of percent with what else runs, the number of instructions
does not (two runs agree within about 0.2 %), so this is the before/after for a
change to the L7 hot path.

The proxy (`python -m proxy`, run from TREE: the repo, or an exported revision
such as `git archive REV proxy | tar -x -C DIR`) runs under callgrind with
instrumentation off, one http listener with every teaching feature on (the
request event with candidates and why, metrics; access log off) round-robin
over four tiny keep-alive asyncio origins in this process. After a warm-up,
instrumentation is switched on for N requests, made by C keep-alive client
connections in this process (GET /, a 3-byte reply), and off again.

    .venv/bin/python bench/l7_instructions.py                    # the working tree
    .venv/bin/python bench/l7_instructions.py -n 2000 --runs 2
    .venv/bin/python bench/l7_instructions.py /tmp/base -n 2000  # another revision
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive origin: one reply per request head (the proxy sends GETs only).

    It ends when the proxy closes the connection (at its exit); a cancelled
    handler would be reported by asyncio's streams as an unhandled error.
    """
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(REPLY)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _clients(port: int, count: int, concurrency: int) -> None:
    async def connection(requests: int) -> None:
        reader, writer = await asyncio.open_connection(c.LOCAL, port)
        for _ in range(requests):
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise c.BenchError(f"unexpected reply through the proxy: {head[:200]!r}")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
        writer.close()

    share, extra = divmod(count, concurrency)
    await asyncio.gather(*(connection(share + (i < extra)) for i in range(concurrency)))


def count(tree: Path, requests: int, concurrency: int,
          keep: Path | None = None) -> float:
    """Instructions per request, one run."""
    listen, admin, *origins = c.free_ports(6)
    work = Path(tempfile.mkdtemp(prefix="lblab-l7-instr-"))
    config = c.lblab_config(listen, admin, {"origin": c.lblab_pool(
        [(c.LOCAL, p) for p in origins])})
    path = c.write_yaml(work / "proxy.yaml", config)
    out = work / "callgrind.out"
    proxy = c.proxy_under_callgrind(tree, path, out)
    loop = asyncio.new_event_loop()
    servers = [loop.run_until_complete(asyncio.start_server(_origin, c.LOCAL, p))
               for p in origins]
    try:
        c.wait_listening(listen, proxy)
        loop.run_until_complete(_clients(listen, 200, concurrency))  # warm-up, not counted
        time.sleep(1)
        c.callgrind_switch(proxy, on=True)
        loop.run_until_complete(_clients(listen, requests, concurrency))
        c.callgrind_switch(proxy, on=False)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(120)
        for server in servers:
            server.close()
        # The proxy has exited: the origins' handlers see their connections close.
        pending = asyncio.all_tasks(loop)
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=10))
        loop.close()
    total = c.callgrind_total(out)
    if keep is not None:  # for callgrind_annotate
        keep.parent.mkdir(parents=True, exist_ok=True)
        out.replace(keep)
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    return total / requests


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("tree", nargs="?", default=str(c.REPO),
                        help="directory holding the proxy package (default: this repo)")
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep", metavar="FILE",
                        help="keep the last run's callgrind output (callgrind_annotate FILE)")
    args = parser.parse_args(argv)
    tree = c.check_tree_and_valgrind(parser, args.tree)
    for n in range(args.runs):
        keep = Path(args.keep) if args.keep and n == args.runs - 1 else None
        per = count(tree, args.requests, args.concurrency, keep)
        print(f"{tree}: run {n + 1}: {per:,.0f} instructions per request "
              f"({args.requests} keep-alive requests, {args.concurrency} connections, "
              "callgrind, user space)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
