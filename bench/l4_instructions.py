"""Instructions the proxy executes per L4 churn connection (valgrind callgrind, user space).

CPU time per request on a shared 2-core machine moves by tens of percent with
what else runs; the number of instructions does not (repeat runs agree within
about 1 %). So this is the measure for a before/after of a change to the L4
hot path, beside bench/l4.py's per-CPU-second ratios (which include the
kernel's share, not counted here).

The proxy (`python -m proxy`, run from TREE: the repo, or an exported revision
such as `git archive REV proxy | tar -x -C DIR`) runs under callgrind with
instrumentation off; after a warm-up, instrumentation is switched on for N
connections (each: connect, one HTTP/1.1 request with Connection: close, the
reply, close) made by an asyncio client in this process, C at a time, to a tcp
listener round-robin over four tiny asyncio origins, and off again.

    .venv/bin/python bench/l4_instructions.py                      # the working tree
    .venv/bin/python bench/l4_instructions.py /tmp/base -n 1000 --runs 3
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


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    writer.close()


async def _clients(port: int, count: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(c.LOCAL, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = await reader.read()
            writer.close()
            if not reply.endswith(b"ok"):
                raise c.BenchError(f"unexpected reply through the proxy: {reply[:200]!r}")

    await asyncio.gather(*(one() for _ in range(count)))




def count(tree: Path, connections: int, concurrency: int) -> float:
    """Instructions per connection, one run."""
    listen, admin, *origins = c.free_ports(6)
    work = Path(tempfile.mkdtemp(prefix="lblab-l4-instr-"))
    config = c.lblab_config(listen, admin, {"origin": c.lblab_pool(
        [(c.LOCAL, p) for p in origins])}, protocol="tcp")
    path = c.write_yaml(work / "proxy.yaml", config)
    out = work / "callgrind.out"
    proxy = c.proxy_under_callgrind(tree, path, out)
    loop = asyncio.new_event_loop()
    servers = [loop.run_until_complete(asyncio.start_server(_origin, c.LOCAL, p))
               for p in origins]
    try:
        c.wait_listening(listen, proxy)
        loop.run_until_complete(_clients(listen, 50, concurrency))  # warm-up, not counted
        time.sleep(1)
        c.callgrind_switch(proxy, on=True)
        loop.run_until_complete(_clients(listen, connections, concurrency))
        time.sleep(1)
        c.callgrind_switch(proxy, on=False)
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(120)
        for server in servers:
            server.close()
        loop.close()
    total = c.callgrind_total(out)
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    return total / connections


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("tree", nargs="?", default=str(c.REPO),
                        help="directory holding the proxy package (default: this repo)")
    parser.add_argument("-n", "--connections", type=int, default=1000)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    tree = c.check_tree_and_valgrind(parser, args.tree)
    for n in range(args.runs):
        per = count(tree, args.connections, args.concurrency)
        print(f"{tree}: run {n + 1}: {per:,.0f} instructions per connection "
              f"({args.connections} connections, callgrind, user space)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
