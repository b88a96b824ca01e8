"""Measurements for the lifecycle (not a test; prints figures). Run from the repo root:

    .venv/bin/python -m tests.proxy.health.bench_lifecycle [--trials 10] [--backends 50] [--uvloop]

1. detection: a toy backend killed (POST /_control/crash) at a random phase of the
   probe cycle, interval 200 ms, unhealthy_threshold 3: time from the crash request to
   the StateChange healthy -> unhealthy. Expect 400..600 ms plus the probe's own time.
2. probe cost: N backends (all served by one toy backend process, each its own
   BackendState and checker, all on one shared scheduler) probed over HTTP every 100 ms for 5 s: CPU seconds
   this process spent per wall second, probes done vs due, and event-loop lag.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from labs.backend.testing import free_port, start_backend
from proxy.events import HealthProbe, StateChange
from proxy.health.manager import HealthManager
from proxy.model import Health
from tests.proxy.health.helpers import fake_server, make_runtime


async def wait_until(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError
        await asyncio.sleep(0.002)


async def detection(trials: int) -> list[float]:
    figures = []
    rng = random.Random(1)
    port = free_port()
    for _ in range(trials):
        handle = await asyncio.to_thread(start_backend, "m1", port)
        rt = make_runtime({"web": {
            "backends": [{"name": "m1", "address": f"127.0.0.1:{port}"}],
            "health": {"interval": "200ms", "timeout": "150ms", "healthy_threshold": 2,
                       "unhealthy_threshold": 3}}})
        seen = {}
        rt.bus.add_sink(lambda e: seen.setdefault(e.new, rt.clock())
                        if isinstance(e, StateChange) else None)
        manager = HealthManager(fake_server(rt))
        await manager.start()
        b = rt.backend("web", "m1")
        await wait_until(lambda: b.health is Health.HEALTHY)
        await asyncio.sleep(rng.uniform(0, 0.2))  # a random phase of the probe cycle
        killed = rt.clock()
        await asyncio.to_thread(handle.crash)
        await wait_until(lambda: "unhealthy" in seen)
        figures.append(seen["unhealthy"] - killed)
        await manager.stop()
        handle.stop()
    return figures


async def probe_cost(n: int, seconds: float = 5.0) -> dict:
    handle = await asyncio.to_thread(start_backend, "cost")
    try:
        rt = make_runtime({"web": {
            "backends": [{"name": f"c{i}", "address": f"127.0.0.1:{handle.port}"}
                         for i in range(n)],
            "health": {"interval": "100ms", "timeout": "1s", "jitter": "20ms",
                       "healthy_threshold": 1}}})
        probes = [0]
        events = [0]

        def sink(e):
            if isinstance(e, HealthProbe):
                events[0] += 1
                probes[0] += e.count

        rt.bus.add_sink(sink)
        manager = HealthManager(fake_server(rt))
        await manager.start()
        await asyncio.sleep(1.0)  # settle
        done_before = sum(c.probes for c in manager.checkers.values())
        events[0] = 0
        lags = []
        cpu0, wall0 = time.process_time(), time.monotonic()
        end = wall0 + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        done = sum(c.probes for c in manager.checkers.values()) - done_before
        await manager.stop()
        fails = sum(1 for c in manager.checkers.values() if c.last and not c.last.ok)
        return {"backends": n, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                "cpu_share": f"{cpu / wall:.0%} of one core",
                "probes": done, "probes_due": int(n * wall / 0.11),
                "events_published": events[0],
                "cpu_per_probe_us": round(cpu / max(1, done) * 1e6),
                "loop_lag_ms_p50": round(statistics.median(lags) * 1000, 2),
                "loop_lag_ms_max": round(max(lags) * 1000, 2),
                "failing_at_end": fails}
    finally:
        handle.stop()


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--backends", type=int, default=50)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    return parser.parse_args()


async def main(args):
    figures = await detection(args.trials)
    ms = sorted(round(f * 1000) for f in figures)
    print(f"death -> unhealthy over {len(ms)} trials (interval 200 ms, threshold 3): "
          f"min {ms[0]} ms, median {statistics.median(ms):.0f} ms, max {ms[-1]} ms; all: {ms}")
    print("probe cost:", await probe_cost(args.backends))


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(arguments))
