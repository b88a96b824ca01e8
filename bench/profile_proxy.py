"""Run `python -m proxy` under cProfile, profiling only while told to.

    python bench/profile_proxy.py --out proxy.pstats -- --config FILE.yaml

The profiler starts off. SIGUSR1 turns it on (send it when the load starts),
SIGUSR2 turns it off and writes the stats to --out (send it when the load
ends), so start-up and shutdown do not dilute the picture. If the proxy exits
while profiling is on, the stats are written then. Only the main thread is
profiled (the proxy's event loop runs there).
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import runpy
import signal
import sys
import time
from pathlib import Path

# Run as a script from bench/: make the repo root importable, as `python -m` would.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the pstats file")
    parser.add_argument("proxy_args", nargs=argparse.REMAINDER,
                        help="arguments for python -m proxy (after --)")
    args = parser.parse_args()
    proxy_args = args.proxy_args[1:] if args.proxy_args[:1] == ["--"] else args.proxy_args

    profiler = cProfile.Profile()
    state = {"on": False}
    # The cyclic GC's pauses while profiling: cProfile charges them to whatever
    # function allocated last, so they are counted apart (per generation).
    gc_time = [0.0, 0.0, 0.0]
    gc_runs = [0, 0, 0]
    gc_began = [0.0]

    def on_gc(phase, info):
        if not state["on"]:
            return
        if phase == "start":
            gc_began[0] = time.perf_counter()
        else:
            gen = info["generation"]
            gc_time[gen] += time.perf_counter() - gc_began[0]
            gc_runs[gen] += 1

    gc.callbacks.append(on_gc)

    def start(signum, frame):
        if not state["on"]:
            state["on"] = True
            gc_time[:] = [0.0, 0.0, 0.0]
            gc_runs[:] = [0, 0, 0]
            profiler.enable()
            print("profiler on", flush=True)

    def stop(signum=None, frame=None):
        if state["on"]:
            profiler.disable()
            state["on"] = False
            profiler.dump_stats(args.out)
            print(f"gc pauses: {gc_runs[0]}/{gc_runs[1]}/{gc_runs[2]} collections of generation "
                  f"0/1/2, {gc_time[0]:.3f}/{gc_time[1]:.3f}/{gc_time[2]:.3f} s", flush=True)
            print(f"profile written to {args.out}", flush=True)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["proxy", *proxy_args]
    try:
        runpy.run_module("proxy", run_name="__main__", alter_sys=True)
    finally:
        stop()


if __name__ == "__main__":
    main()
