"""Instructions per request of bench/l7_inproc.py's variants (valgrind callgrind).

bench/l7_inproc.py times its variants interleaved, but on a shared 2-core
machine even its ratios move by tens of percent; its --opcodes count misses the
C side (JSON encoding, dicts) and, for `dash`, depends on the tracer's own speed
(a subscription sends up to max_per_s events per second of the events' clock:
the slower each request, the larger the share sent in full). This counts every
user-space instruction instead, and gives the events' clock a fixed pace (one
request every 1/PACE s), so `dash` sends its steady share (200/PACE) whatever
valgrind's speed. Repeat runs agree within about 1 %.

One child process (this script with --child, from TREE: the repo, or an exported
revision such as `git archive REV | tar -x -C DIR`) runs under callgrind, builds
the rig of bench/l7_inproc.py, and for each variant warms up (12,000 requests:
the request store full, as in steady state), then zeroes the counters, runs N
requests and dumps them (callgrind_control). `--full-event` also counts one
full request event's line (to_json of a lazy event, as a subscriber is sent).

    .venv/bin/python bench/l7_inproc_instructions.py
    .venv/bin/python bench/l7_inproc_instructions.py /tmp/base --full-event
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _ctl(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _child(variants: list[str], n: int, pace: float, full_event: bool) -> None:
    sys.path.insert(0, os.getcwd())
    os.environ.setdefault("LBLAB_REQUEST_EVENTS", "1")
    from bench import common as c
    from bench.l7_inproc import Rig
    from proxy.config import parse_config
    from proxy.server import ProxyServer
    import proxy.io.l7 as l7

    ports = c.free_ports(6)
    config = parse_config(c.lblab_config(ports[0], ports[1], {
        "web": c.lblab_pool([(c.LOCAL, p) for p in ports[2:]])}))
    server = ProxyServer(config)
    await server.start()
    gc.freeze()
    clock = [time.time()]

    def paced_time() -> float:  # the events' wall clock: one request every 1/pace s
        clock[0] += 1.0 / pace
        return clock[0]

    wall_time = l7._time
    rig = Rig(server, 4)
    for variant in variants:
        server.request_events = variant != "zero"
        sub = (server.bus.subscribe(requests="sample", max_per_s=200, interval=0.25)
               if variant == "dash" else None)
        l7._time = paced_time if sub is not None else wall_time
        for _ in range(12_000 if variant != "zero" else 300):
            rig.one()
        rig.check()
        if sub is not None:
            sub._last = clock[0]
            sub._tokens = 0.0  # no burst in the window: the steady share only
        # A collection the earlier variants' allocations made due must not land in
        # this one's window (one full pass is ~40M instructions, ~20k per request
        # here): what the cyclic GC does in the window is then this variant's own.
        gc.collect()
        _ctl("-z")
        for _ in range(n):
            rig.one()
        _ctl("-d", variant)
        rig.check()
        if sub is not None:
            sub.close()
    if full_event:
        server.request_events = True
        l7._time = wall_time
        for _ in range(n + 300):
            rig.one()
        rig.check()
        events = list(server.bus._requests.ring)[-n:]  # lazy, as published
        _ctl("-z")
        for ev in events:
            ev.to_json()
        _ctl("-d", "full-event")
    await server.stop(grace=0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("tree", nargs="?", default=str(HERE.parent.parent),
                        help="the source tree to measure (default: this repo)")
    parser.add_argument("-n", type=int, default=2000, help="requests per variant")
    parser.add_argument("--variants", default="zero,lblab,dash")
    parser.add_argument("--pace", type=float, default=20_000.0,
                        help="requests per second of the events' clock (default 20000)")
    parser.add_argument("--full-event", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if args.child:
        asyncio.run(_child(variants, args.n, args.pace, args.full_event))
        return 0
    tree = Path(args.tree).resolve()
    python = str(HERE.parent.parent / ".venv" / "bin" / "python")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.%p")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", python,
               str(HERE), str(tree), "--child", "-n", str(args.n), "--variants",
               args.variants, "--pace", str(args.pace)] + (
                   ["--full-event"] if args.full_event else [])
        subprocess.run(cmd, cwd=tree, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        counts = {}
        for path in glob.glob(os.path.join(tmp, "cg.*.*")):
            text = Path(path).read_text(errors="replace")
            trigger = re.search(r"^desc: Trigger: dump (\S+)", text, re.M)
            totals = re.search(r"^totals: (\d+)", text, re.M)
            if trigger and totals:
                counts[trigger.group(1)] = int(totals.group(1)) / args.n
    print(f"tree {tree}; {args.n} requests per variant; events' clock {args.pace:g} req/s")
    for name in variants + (["full-event"] if args.full_event else []):
        print(f"{name:11} {counts.get(name, float('nan')) / 1000:9.1f} k instructions per "
              + ("event" if name == "full-event" else "request"))
    if "zero" in counts and "lblab" in counts:
        print(f"teaching cost (lblab against zero): "
              f"{(counts['lblab'] / counts['zero'] - 1) * 100:.1f} %")
    if "lblab" in counts and "dash" in counts:
        print(f"dashboard cost (dash against lblab): "
              f"{(counts['dash'] / counts['lblab'] - 1) * 100:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
