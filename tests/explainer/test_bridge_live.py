"""The bridge against a real proxy: ticks carry real decisions; a proxy restart is survived."""
import asyncio
import urllib.request

import pytest

from explainer.bridge import Bridge
from tests.explainer.parts import wait_until


async def next_tick(ticks: list, predicate, timeout: float = 10.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = 0
    while loop.time() < deadline:
        while seen < len(ticks):
            tick = ticks[seen]
            seen += 1
            if predicate(tick):
                return tick
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no matching tick in {timeout}s (got {len(ticks)} ticks; last: "
                       f"{ticks[-1]['proxy'] if ticks else None})")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return resp.headers["X-Request-Id"]


@pytest.mark.asyncio
async def test_bridge_ticks_then_survives_a_proxy_restart(lab):
    ticks: list[dict] = []

    async def send(message):
        ticks.append(message)

    bridge = Bridge("default", lab.admin_url, send, tick_s=0.1, state_every_s=0.3)
    bridge.max_backoff = 0.5
    task = asyncio.create_task(bridge.run())
    try:
        first = await next_tick(ticks, lambda t: t["state"] is not None)
        assert first["type"] == "lab.tick" and first["proxy"]["reachable"] is True
        assert "pool web" in first["diagram"]
        await next_tick(ticks, lambda t: t["stream"]["connected"])

        request_id = await asyncio.to_thread(get, f"{lab.proxy_url}/hello")
        tick = await next_tick(ticks, lambda t: any(d["request_id"] == request_id
                                                     for d in t["decisions"]))
        decision = next(d for d in tick["decisions"] if d["request_id"] == request_id)
        assert decision["backend"] in ("b1", "b2") and decision["algorithm"] == "round_robin"
        assert tick["stats"]["backends"][decision["backend"]]["requests"] == 1

        await asyncio.to_thread(lab.kill, "proxy")
        down = await next_tick(ticks, lambda t: t["proxy"]["reachable"] is False)
        assert "does not answer" in down["proxy"]["detail"]
        assert down["stream"]["connected"] is False

        await asyncio.to_thread(lab.start_proxy)  # same ports, same config
        await next_tick(ticks, lambda t: t["proxy"]["reachable"] is True, timeout=15)
        await next_tick(ticks, lambda t: t["stream"]["connected"], timeout=15)
        # the stream is really back: a new request reaches the page again
        await asyncio.sleep(0.3)
        request_id = await asyncio.to_thread(
            wait_until, lambda: _try_get(f"{lab.proxy_url}/again"), 10, 0.1, "proxy serving")
        await next_tick(ticks, lambda t: any(d["request_id"] == request_id
                                             for d in t["decisions"]))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _try_get(url):
    try:
        return get(url)
    except Exception:
        return None


def _burst(url: str, count: int) -> list[str]:
    """`count` keep-alive GETs in a row; their request ids."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    ids = []
    try:
        for i in range(count):
            conn.request("GET", f"/burst/{i}")
            resp = conn.getresponse()
            resp.read()
            ids.append(resp.headers["X-Request-Id"])
    finally:
        conn.close()
    return ids


@pytest.mark.asyncio
async def test_sampled_stream_keeps_counts_exact(lab):
    """The bridge asks for a few decisions a tick; request_stats keep the counts exact."""
    ticks: list[dict] = []

    async def send(message):
        ticks.append(message)

    # 2 decisions per 0.1 s tick: the proxy sends about 20 request events a second.
    bridge = Bridge("default", lab.admin_url, send, tick_s=0.1, state_every_s=0.3,
                    decisions_per_tick=2)
    assert bridge.stream_query(0) == {"replay": "0", "requests": "sample", "max_per_s": "20",
                                      "interval_ms": "100"}
    task = asyncio.create_task(bridge.run())
    try:
        await next_tick(ticks, lambda t: t["stream"]["connected"])
        await asyncio.to_thread(wait_until, lambda: bridge.coalescer.counts_from_stats, 10, 0.05,
                                "the opening request_stats line")
        start = len(ticks)
        total = 200
        ids = await asyncio.to_thread(_burst, lab.proxy_url, total)

        def counted():
            return sum(b["requests"] for t in ticks[start:]
                       for b in t["stats"]["backends"].values())

        await asyncio.to_thread(wait_until, lambda: counted() >= total or None, 10, 0.05,
                                "every request counted")
        await asyncio.sleep(0.5)  # later ticks must not count anything twice
        assert counted() == total
        carried = [d["request_id"] for t in ticks[start:] for d in t["decisions"]]
        assert 0 < len(carried) < total and set(carried) <= set(ids)
        assert sum(t["stats"]["totals"].get("2xx", 0) for t in ticks[start:]) == total
        assert sum(t["decisions_dropped"] for t in ticks[start:]) == total - len(carried)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
