"""Where LBLab spends its time under load: cProfile of the proxy during a wrk run.

Starts the origin and LBLab (one pool of --backends ports, round_robin, like
bench/l7.py) with the proxy wrapped by bench/profile_proxy.py; turns the
profiler on just before the measured wrk run and off just after, then prints
the top functions by own time (tottime) and by cumulative time, and writes the
.pstats file next to the JSON results (open it with `python -m pstats FILE` or
snakeviz).

cProfile slows a Python program down (roughly 1.5-2x here), so the req/s
printed is not a benchmark result; the shares of time are what to read.

    .venv/bin/python bench/profile_l7.py -d 10
    .venv/bin/python bench/profile_l7.py -d 10 --with-subscriber --top 30
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import pstats
import shutil
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    c.add_common_args(parser)
    parser.add_argument("--backends", type=int, default=4)
    parser.add_argument("--with-subscriber", action="store_true",
                        help="keep one /events reader connected during the run")
    parser.add_argument("--top", type=int, default=25, help="rows per listing (default 25)")
    parser.add_argument("--checked", type=int, default=0, metavar="N",
                        help="add a second pool of N origin ports with active health checks "
                             "(as bench/health.py) to see what the checks cost under load")
    parser.add_argument("--interval", default="100ms", help="health.interval with --checked")
    return parser.parse_args(argv)


def listing(stats_path: Path, sort: str, top: int) -> str:
    out = io.StringIO()
    st = pstats.Stats(str(stats_path), stream=out)
    st.strip_dirs().sort_stats(sort).print_stats(top)
    text = out.getvalue()
    # Keep the table, drop pstats' preamble lines about the file.
    start = text.find("   ncalls")
    return text[start:] if start >= 0 else text


def main(argv=None) -> int:
    args = parse_args(argv)
    c.handle_sigterm()
    opts = c.wrk_options(args)
    proxy_cpu, client_cpu = c.cpus(args)
    print(c.header("Profile: LBLab under wrk load (cProfile, main thread)"))
    if why := c.lblab_runnable():
        print(f"cannot run: {why}")
        return 1
    c.warn_if_busy(wait=args.wait_quiet)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    with c.Processes(keep=args.keep) as procs:
        ports = c.free_ports(args.backends + args.checked)
        backends = [(c.LOCAL, p) for p in ports[:args.backends]]
        c.start_origin(procs, ports, cpu=client_cpu)
        port, admin_port = c.free_port(), c.free_port()
        pools = {"web": c.lblab_pool(backends)}
        if args.checked:
            pools["checked"] = c.lblab_pool(
                [(c.LOCAL, p) for p in ports[args.backends:]], prefix="h",
                health={"type": "http", "path": "/health", "interval": args.interval,
                        "timeout": "500ms"})
        config = c.lblab_config(port, admin_port, pools, traffic_pool="web")
        pstats_tmp = procs.path("proxy.pstats")
        lblab = c.start_lblab(procs, "lblab", config, port, proxy_cpu, profile_out=pstats_tmp)
        if args.with_subscriber:
            c.start_event_reader(procs, "event-reader", admin_port,
                                 procs.path("reader.json"), cpu=client_cpu)
        result = c.run_wrk(f"http://{c.LOCAL}:{port}/", opts, procs.dir, watch=[lblab],
                           on_start=lambda: lblab.signal(signal.SIGUSR1),
                           on_end=lambda: lblab.signal(signal.SIGUSR2))
        deadline = time.monotonic() + 30
        while not pstats_tmp.exists() or "profile written" not in lblab.output():
            if time.monotonic() > deadline:
                raise c.BenchError(f"the profiler wrote nothing\n{lblab.tail()}")
            time.sleep(0.1)
        gc_line = next((line for line in lblab.output().splitlines()
                        if line.startswith("gc pauses:")), "gc pauses: not reported")
        c.RESULTS.mkdir(parents=True, exist_ok=True)
        kept = c.RESULTS / f"profile-{stamp}.pstats"
        shutil.copy(pstats_tmp, kept)

    total_tt = pstats.Stats(str(kept)).total_tt
    measured = result.cpu.get("seconds") or args.duration
    proxy_pct = result.cpu.get("process_pct", {}).get("lblab")
    by_own = listing(kept, "tottime", args.top)
    by_cum = listing(kept, "cumulative", args.top)
    print(f"\nunder cProfile: {result.rps:,.0f} req/s, p99 {c.fmt_ms(result.p99_ms)} ms, "
          f"errors {result.error_count} (not a benchmark: the profiler slows Python down)")
    print(f"the proxy process used {proxy_pct if proxy_pct is not None else '?'}% of its "
          f"core over the {measured:.1f} s measured; {result.requests:,} requests; profiled "
          f"time {total_tt:.2f} s. Times are seconds over the whole run: divide by the "
          f"request count for a per-request cost. The event loop itself (uvloop, C) shows "
          f"only through the Python callbacks it runs and the builtins they call "
          f"(transport.write is the send() system call).")
    print(f"{gc_line} (the cyclic GC, charged by cProfile to whichever function allocated)")
    print(f"\n== top {args.top} by own time (tottime) ==\n{by_own}")
    print(f"== top {args.top} by cumulative time ==\n{by_cum}")
    if not args.no_save:
        path = c.write_results("profile", {
            "args": vars(args), "wrk": result.as_dict(), "python_seconds": total_tt,
            "gc": gc_line,
            "pstats": str(kept.relative_to(c.REPO)),
            "by_tottime": by_own.splitlines(), "by_cumulative": by_cum.splitlines()})
        print(f"results: {path.relative_to(c.REPO)} and {kept.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
