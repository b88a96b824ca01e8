"""Receive the bridge's `lab.tick` messages from the Redis channel layer, as a page would.

    python bench/tick_probe.py --redis redis://127.0.0.1:6390/0 --group sandbox.bench \
        --stats out.json

It joins the Channels group the bridge sends to (with channels_redis, the same
backend lblab/settings.py uses when REDIS_URL is set) and, for every request
decision carried in a tick, records how far behind the page would be: the time
the tick arrived here minus the decision's `ts` (when the proxy made it; same
host, same clock). That is the bridge's whole path -- proxy stream, coalescing,
the tick interval, the channel layer -- short of the last WebSocket hop. On
SIGTERM or SIGINT it writes its stats as JSON to --stats.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time


class Stats:
    def __init__(self):
        self.ready_at: float | None = None
        self.ticks = 0
        self.decisions = 0
        self.decisions_dropped = 0  # counted by the bridge: not forwarded, by design
        self.requests_counted = 0  # stats.totals / per-tick request counts when present
        self.lag_ms: list[float] = []  # per decision: arrival of its tick - decision ts
        self.fresh_lag_ms: list[float] = []  # per tick: arrival - newest decision ts
        self.tick_gap_ms: list[float] = []
        self.stream_connected: set = set()
        self.last_tick: float | None = None
        self.error: str | None = None

    def add(self, msg: dict, now: float) -> None:
        self.ticks += 1
        if self.last_tick is not None:
            self.tick_gap_ms.append((now - self.last_tick) * 1000)
        self.last_tick = now
        stream = msg.get("stream") or {}
        self.stream_connected.add(bool(stream.get("connected")))
        decisions = msg.get("decisions") or []
        self.decisions += len(decisions)
        self.decisions_dropped += int(msg.get("decisions_dropped") or 0)
        newest = None
        for d in decisions:
            ts = d.get("ts") if isinstance(d, dict) else None
            if isinstance(ts, (int, float)) and self.ready_at and ts >= self.ready_at:
                self.lag_ms.append((now - ts) * 1000)
                newest = ts if newest is None else max(newest, ts)
        if newest is not None:
            self.fresh_lag_ms.append((now - newest) * 1000)

    def summary(self) -> dict:
        def pcts(values):
            s = sorted(values)
            if not s:
                return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
            at = lambda p: round(s[min(len(s) - 1, int(p / 100 * len(s)))], 2)  # noqa: E731
            return {"p50": at(50), "p90": at(90), "p99": at(99), "max": round(s[-1], 2),
                    "n": len(s)}

        return {
            "ready": self.ready_at is not None,
            "seconds": round(time.time() - self.ready_at, 3) if self.ready_at else 0,
            "ticks": self.ticks,
            "decisions": self.decisions,
            "decisions_dropped": self.decisions_dropped,
            "lag_ms": pcts(self.lag_ms),
            "fresh_lag_ms": pcts(self.fresh_lag_ms),
            "tick_gap_ms": pcts(self.tick_gap_ms),
            "stream_connected": sorted(self.stream_connected),
            "error": self.error,
        }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    parser.add_argument("--group", required=True, help="Channels group, e.g. sandbox.bench")
    parser.add_argument("--stats", required=True)
    args = parser.parse_args()

    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(hosts=[args.redis], capacity=500, expiry=10)
    stats = Stats()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        channel = await layer.new_channel("tickprobe")
        await layer.group_add(args.group, channel)
        stats.ready_at = time.time()
        print("tick probe ready", flush=True)
        while True:
            msg = await layer.receive(channel)
            if msg.get("type") == "lab.tick":
                stats.add(msg, time.time())
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # report it in the stats the bench reads
        stats.error = f"{type(exc).__name__}: {exc}"
        print(stats.error, file=sys.stderr, flush=True)
    finally:
        with open(args.stats, "w") as fh:
            json.dump(stats.summary(), fh)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(0)
