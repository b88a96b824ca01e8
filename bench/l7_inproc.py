"""The L7 proxy's own Python cost per request, in one process, without sockets.

bench/l7.py measures the whole proxy (kernel, uvloop, Python) against nginx,
but on a shared machine its per-CPU-second figures move by 30 % from run to
run. This one isolates what this project's Python does per request, and
compares variants *inside one process, interleaved*, so a busy machine slows
every variant alike and the ratios between them stay put.

A real ProxyServer is started (one http listener, one pool of --backends
backends, round_robin, no health checks: the backends are not real). Its
client protocol (L7Connection) is then fed a keep-alive GET directly, and each
backend connection is a real UpstreamConnection on a fake transport that
records the bytes written and is fed an nginx-like response: the exchange,
the parser glue, routing, picking, the event and its consumers all run for
real; only the socket system calls and uvloop are left out.

Variants (each measured --rounds times, interleaved):

  zero   request events sampled to zero (LBLAB_REQUEST_EVENTS=0's switch)
  lblab  every teaching feature on, nobody subscribed (the default)
  dash   lblab plus one subscription as the site's bridge makes it
         (requests="sample", max_per_s=200, interval 250 ms)
  full   lblab plus one subscriber of every event (requests="all")

    .venv/bin/python bench/l7_inproc.py
    .venv/bin/python bench/l7_inproc.py -n 50000 --rounds 5 --variants zero,lblab,dash
    .venv/bin/python bench/l7_inproc.py --profile lblab --top 30

--opcodes counts the bytecode instructions and Python function calls per
request of each variant instead (sys.settrace): slow, but the same on a busy
machine as on an idle one, so two versions can be compared anywhere.

--profile VARIANT runs that variant once under cProfile instead and prints the
functions by own time with their calls per request (cProfile inflates call-heavy
code: read the shares and the call counts, not the microseconds).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

VARIANTS = ("zero", "lblab", "dash", "full")
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 09:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n"
            b"\r\nok\n")


class FakeTransport:
    """Enough of an asyncio transport for the proxy's protocols: writes are kept."""

    def __init__(self, peer=("127.0.0.1", 50000)):
        self.peer = peer
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, lines) -> None:
        self.written.append(b"".join(lines))

    def get_extra_info(self, name, default=None):
        return {"peername": self.peer, "socket": None}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    abort = close


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("-n", "--requests", type=int, default=30000,
                        help="requests per variant per round (default 30000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--backends", type=int, default=4, help="backends (default 4)")
    parser.add_argument("--variants", default=",".join(VARIANTS[:3]),
                        help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--profile", choices=VARIANTS, metavar="VARIANT",
                        help="profile one variant (cProfile) instead of timing")
    parser.add_argument("--opcodes", action="store_true",
                        help="count bytecodes and calls per request instead of timing")
    parser.add_argument("--top", type=int, default=30, help="rows with --profile (default 30)")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.profile:
        args.variants = [args.profile]
        args.rounds = 1
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


class HandBatch:
    """proxy.io.writes.WriteBatch flushed by hand: under load one flush (and one
    `call_soon`) serves a whole pass of the loop, dozens of requests."""

    def __init__(self):
        self.dirty = []

    def add(self, conn) -> None:
        self.dirty.append(conn)

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.send_pending()


class Rig:
    """One started ProxyServer, one client connection and one idle upstream per backend."""

    def __init__(self, server, backends: int):
        from proxy.io.upstream import UpstreamConnection

        self.server = server
        # Writes wait for the end of the loop's pass (proxy/io/writes.py); no loop
        # runs between the steps here, so each step ends its pass by hand.
        batch = HandBatch()
        self.flush = batch.flush
        bound = server.listeners["web"]
        self.client = server._protocol(bound)
        self.client_transport = FakeTransport()
        self.client.connection_made(self.client_transport)
        self.client.batch = batch
        self.upstreams = []
        for backend in server.runtime.pools["web"].backends.values():
            key = (backend.host, backend.port)
            up = UpstreamConnection(server.upstreams, key)
            up.connection_made(FakeTransport())
            up.batch = batch
            server.upstreams.put(up, 3600.0)
            self.upstreams.append(up)

    def one(self) -> None:
        """One request through the proxy and its response back."""
        self.client.data_received(REQUEST)
        self.flush()
        for up in self.upstreams:
            if up.exchange is not None:
                up.data_received(RESPONSE)
                self.flush()
                break
        else:
            raise c.BenchError("no backend connection got the request")

    def check(self) -> None:
        out = self.client_transport.written
        if not out or not out[-1].startswith(b"HTTP/1.1 200 "):
            raise c.BenchError(f"unexpected response {out[-1:]!r}")
        out.clear()
        for up in self.upstreams:
            up.transport.written.clear()


GC_SECONDS = [0.0, 0.0]  # [time spent in the cyclic GC while measuring, when it began]


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        GC_SECONDS[1] = time.process_time()
    else:
        GC_SECONDS[0] += time.process_time() - GC_SECONDS[1]


def measure(rig: Rig, n: int) -> tuple[float, float]:
    """(process CPU seconds, of it in the cyclic GC) per request over n requests."""
    one = rig.one
    for _ in range(200):  # warm the caches of names, hosts, children
        one()
    rig.check()
    GC_SECONDS[0] = 0.0
    gc.callbacks.append(_on_gc)
    start = time.process_time()
    try:
        for _ in range(n):
            one()
        spent = time.process_time() - start
    finally:
        gc.callbacks.remove(_on_gc)
    rig.check()
    return spent / n, GC_SECONDS[0] / n


def count_opcodes(rig: Rig, n: int) -> tuple[float, float]:
    """(bytecodes, Python-level calls) executed per request, traced."""
    for _ in range(200):
        rig.one()
    rig.check()
    counts = [0, 0]

    def trace(frame, event, arg):
        if event == "call":
            counts[1] += 1
            frame.f_trace_opcodes = True
        elif event == "opcode":
            counts[0] += 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(n):
            rig.one()
    finally:
        sys.settrace(None)
    rig.check()
    return counts[0] / n, counts[1] / n


def profile(rig: Rig, n: int, top: int) -> None:
    import cProfile
    import pstats

    for _ in range(200):
        rig.one()
    rig.check()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        rig.one()
    prof.disable()
    rig.check()
    st = pstats.Stats(prof)
    calls = sum(v[1] for v in st.stats.values())
    print(f"{calls / n:.1f} function calls per request; profiled {st.total_tt / n * 1e6:.1f} "
          f"us per request (inflated by the profiler)")
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]
    print(f"{'calls/req':>9} {'own %':>6} {'cum %':>6}  function")
    for (path, line, name), (_cc, nc, tt, ct, _callers) in rows:
        print(f"{nc / n:9.2f} {tt / st.total_tt * 100:6.1f} {ct / st.total_tt * 100:6.1f}  "
              f"{Path(path).name}:{line}({name})")


async def run(args) -> dict[str, list[float]]:
    from proxy.config import parse_config
    from proxy.server import ProxyServer

    ports = c.free_ports(2 + args.backends)
    backends = [(c.LOCAL, p) for p in ports[2:]]
    config = parse_config(c.lblab_config(ports[0], ports[1],
                                             {"web": c.lblab_pool(backends)}))
    server = ProxyServer(config)
    await server.start()
    gc.freeze()  # as `python -m proxy` does after start-up
    results: dict[str, list[float]] = {v: [] for v in args.variants}
    gc_share: dict[str, list[float]] = {v: [] for v in args.variants}
    try:
        rig = Rig(server, args.backends)
        for r in range(args.rounds):
            for variant in args.variants:
                server.request_events = variant != "zero"
                sub = None
                if variant == "dash":
                    sub = server.bus.subscribe(requests="sample", max_per_s=200, interval=0.25)
                elif variant == "full":
                    sub = server.bus.subscribe()
                try:
                    if args.profile:
                        profile(rig, args.requests, args.top)
                        return results
                    if args.opcodes:
                        ops, calls = count_opcodes(rig, min(args.requests, 2000))
                        print(f"{variant}: {ops:.0f} bytecodes, {calls:.1f} Python calls "
                              "per request", flush=True)
                        continue
                    spent, in_gc = measure(rig, args.requests)
                    results[variant].append(spent)
                    gc_share[variant].append(in_gc)
                finally:
                    if sub is not None:
                        sub.close()
                print(f"round {r + 1}/{args.rounds}: {variant} "
                      f"{results[variant][-1] * 1e6:.2f} us/request "
                      f"({gc_share[variant][-1] * 1e6:.2f} in the GC)", flush=True)
                await asyncio.sleep(0)  # let timers (stats lines, sweeps) run
    finally:
        await server.stop(grace=0)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    print(c.header("L7 proxy, Python cost per request in one process (no sockets)"))
    from proxy.__main__ import install_uvloop

    install_uvloop()  # the loop `python -m proxy` runs on (when installed)
    results = asyncio.run(run(args))
    if args.profile or args.opcodes:
        return 0
    base = min(results["lblab"]) if "lblab" in results else None
    zero = min(results["zero"]) if "zero" in results else None
    # Min too: on a shared machine other work only ever adds time to a round.
    print(f"\n{'variant':8} {'min us/req':>11} {'median':>7}  each round")
    for variant, values in results.items():
        print(f"{variant:8} {min(values) * 1e6:11.2f} {statistics.median(values) * 1e6:7.2f}  "
              + " ".join(f"{v * 1e6:.2f}" for v in values))
    if base and zero:
        print(f"teaching cost (lblab against zero, best rounds): "
              f"{(base - zero) / zero * 100:.1f} %")
    if base and "dash" in results:
        dash = min(results["dash"])
        print(f"dashboard cost (dash against lblab, best rounds): "
              f"{(dash - base) / base * 100:.1f} %")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("LBLAB_REQUEST_EVENTS", "1")
    sys.exit(main())
