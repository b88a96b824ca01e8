"""What the config bounds cost at their limits (CPU seconds; not a test, asserts nothing).

    .venv/bin/python bench/config_bounds.py

For each family: the CPU time to refuse a hostile input (alias bomb, deep
nesting, huge integer, oversized document) or to accept the largest config
the bounds allow, and what the proxy then builds from it (a maglev table of
65537 slots for 1000 backends of skewed weights, a consistent-hash ring of
50,000 points). The last line runs a real admin API in this process, PUTs the
large config and reports the longest pause a 1 ms ticker on the same loop saw:
the read and validation run in a worker thread, so the pause is the swap only.
"""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from proxy.balancers.hashing import Ring
from proxy.balancers.maglev import build_table
from proxy.config import ConfigError, MAX_RING_POINTS, MAX_TABLE_SIZE, load_config
from proxy.model import BackendState


def cpu(fn) -> tuple[float, str]:
    start = time.process_time()
    try:
        fn()
        outcome = "accepted"
    except ConfigError as exc:
        outcome = "refused: " + exc.errors[0][1][:60]
    return time.process_time() - start, outcome


def large_config(backends: int = 900, pools: int = 4) -> str:
    lines = ["admin: {listen: '127.0.0.1:0'}",
             "listeners: {web: {bind: '127.0.0.1:0', routes: [all]}}",
             "routes: {all: {forward: p0}}", "pools:"]
    for p in range(pools):
        lines.append(f"  p{p}:\n    backends:")
        lines += [f"      - {{name: p{p}b{i}, address: '127.0.0.1:{1000 + i}', weight: 1}}"
                  for i in range(backends)]
    return "\n".join(lines) + "\n"


def families() -> list[tuple[str, object]]:
    bomb = "a0: &a0 [" + ",".join(["x"] * 10) + "]\n" + "".join(
        f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    return [
        ("alias bomb (10^9 expanded)", lambda: load_config(bomb + "listeners: {}\n")),
        ("nesting 100,000 deep", lambda: load_config("[" * 100_000 + "]" * 100_000)),
        ("integer of 100,000 digits", lambda: load_config("listeners: " + "9" * 100_000)),
        ("document of 4 MB", lambda: load_config(b"#" + b"x" * (4 << 20))),
        ("largest accepted config", lambda: load_config(large_config())),
    ]


def builds() -> list[tuple[str, float]]:
    out = []
    members = [("heavy", 1000)] + [(f"b{i}", 1) for i in range(999)]
    start = time.process_time()
    build_table(members, MAX_TABLE_SIZE)
    out.append((f"maglev table {MAX_TABLE_SIZE} slots, 1000 backends, skewed weights",
                time.process_time() - start))
    pool = [BackendState(name=f"b{i}", host="127.0.0.1", port=1000 + i, pool="p")
            for i in range(1000)]
    start = time.process_time()
    Ring(pool, MAX_RING_POINTS // 1000)
    out.append((f"ring of {MAX_RING_POINTS} points", time.process_time() - start))
    return out


async def put_pause() -> float:
    from proxy.control import start_admin
    from proxy.runtime import Runtime

    class Server:
        def __init__(self, runtime):
            self.runtime, self.bus, self.metrics = runtime, runtime.bus, None

    runtime = Runtime(load_config(large_config(4, 1)))
    handle = await start_admin(Server(runtime))
    worst = 0.0
    stop = False

    async def ticker():
        nonlocal worst
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    task = asyncio.create_task(ticker())
    async with aiohttp.ClientSession() as http:
        async with http.put(handle.url + "/config", data=large_config()) as r:
            assert r.status == 200, await r.text()
    stop = True
    await task
    await handle.stop()
    return worst


def main() -> None:
    rows = []
    for name, fn in families():
        seconds, outcome = cpu(fn)
        rows.append({"what": name, "cpu_s": round(seconds, 3), "outcome": outcome})
    for name, seconds in builds():
        rows.append({"what": name, "cpu_s": round(seconds, 3), "outcome": "built"})
    pause = asyncio.run(put_pause())
    rows.append({"what": "longest loop pause during PUT /config of the largest config",
                 "cpu_s": round(pause, 3), "outcome": "wall seconds"})
    for row in rows:
        print(f"{row['cpu_s']:8.3f}  {row['what']}  ({row['outcome']})")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
