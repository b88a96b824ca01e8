"""A plain reader of the proxy's event stream (GET /events, one JSON object per line).

Used by the benchmarks as a stand-in subscriber (l7.py --with-subscriber, and
bridge.py when the real bridge command does not exist yet) and as a lag probe.

It keeps its own cost low so it measures the proxy, not itself: it splits
lines on bytes, counts them, and parses only the first and last complete line
of every chunk it receives to sample lag (receive time minus the event's `ts`;
same host, same clock). On SIGTERM or SIGINT it writes its stats as JSON to
--stats and exits.

    python bench/event_reader.py --url http://127.0.0.1:9900/events --stats out.json
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
        self.connected_at: float | None = None
        self.lines = 0
        self.request_lines = 0
        self.bytes = 0
        self.chunks = 0
        self.dropped = 0  # summed from stream_gap lines
        self.lag_ms: list[float] = []
        self.bad_lines = 0
        self.error: str | None = None

    def sample(self, line: bytes, now: float) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self.bad_lines += 1
            return
        ts = event.get("ts") if isinstance(event, dict) else None
        # Events older than the connection are history replayed for a first paint,
        # not lag.
        if isinstance(ts, (int, float)) and self.connected_at and ts >= self.connected_at:
            self.lag_ms.append((now - ts) * 1000.0)

    def gap(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        if isinstance(event, dict) and event.get("type") == "stream_gap":
            self.dropped += int(event.get("dropped", 0))

    def summary(self) -> dict:
        lags = sorted(self.lag_ms)

        def pct(p: float):
            return round(lags[min(len(lags) - 1, int(p / 100 * len(lags)))], 3) if lags else None

        elapsed = time.time() - self.connected_at if self.connected_at else 0.0
        return {
            "connected": self.connected_at is not None,
            "seconds": round(elapsed, 3),
            "lines": self.lines,
            "request_lines": self.request_lines,
            "bytes": self.bytes,
            "chunks": self.chunks,
            "dropped": self.dropped,
            "bad_lines": self.bad_lines,
            "lag_samples": len(lags),
            "lag_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99),
                       "max": round(lags[-1], 3) if lags else None},
            "error": self.error,
        }


async def read_stream(url: str, types: str | None, stats: Stats, stop: asyncio.Event) -> None:
    import aiohttp

    params = {"types": types} if types else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(url, params=params) as resp:
            if resp.status != 200:
                stats.error = f"GET {url} answered {resp.status}: {(await resp.text())[:200]}"
                print(stats.error, flush=True)
                return
            stats.connected_at = time.time()
            print("event reader connected", flush=True)
            rest = b""
            async for chunk in resp.content.iter_any():
                now = time.time()
                stats.chunks += 1
                stats.bytes += len(chunk)
                data = rest + chunk
                end = data.rfind(b"\n")
                if end < 0:
                    rest = data
                    continue
                complete, rest = data[:end], data[end + 1:]
                stats.lines += complete.count(b"\n") + 1
                stats.request_lines += complete.count(b'"type":"request"')
                first_end = complete.find(b"\n")
                if first_end < 0:
                    stats.sample(complete, now)
                else:
                    stats.sample(complete[:first_end], now)
                    stats.sample(complete[complete.rfind(b"\n") + 1:], now)
                if b'"stream_gap"' in complete:
                    # Rare: the proxy dropped lines for us. Count every gap line exactly.
                    for line in complete.split(b"\n"):
                        if b'"stream_gap"' in line:
                            stats.gap(line)
                if stop.is_set():
                    return


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--stats", required=True, help="write JSON stats here on exit")
    parser.add_argument("--types", help="comma-separated event types to ask for")
    args = parser.parse_args()
    stats = Stats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await read_stream(args.url, args.types, stats, stop)
        if stats.error is None:
            stats.error = "the stream ended (the proxy closed it)"
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
