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
import runpy
import signal
import sys
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

    def start(signum, frame):
        if not state["on"]:
            state["on"] = True
            profiler.enable()
            print("profiler on", flush=True)

    def stop(signum=None, frame=None):
        if state["on"]:
            profiler.disable()
            state["on"] = False
            profiler.dump_stats(args.out)
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
