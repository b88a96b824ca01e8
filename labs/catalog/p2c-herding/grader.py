"""Herding: how many requests one backend held at once, and the p99 it cost."""
from labs.framework.grading import Result, backend_chart, drop_none, request_diagram, verdict
from labs.framework.recording import count_by, failed, percentile, started_at

BACKENDS = ("b1", "b2", "b3", "b4", "b5")


def window_shares(reqs: list[dict], start: float, end: float, width: float = 0.5
                  ) -> list[tuple[float, str, float, int]]:
    """For each window: (its start, the busiest backend, its share, requests in it)."""
    out = []
    t = start
    while t + width <= end + 1e-9:
        inside = [e for e in reqs if t <= e["t"] < t + width]
        if inside:
            per = count_by(inside, lambda e: e["backend"])
            top = max(per, key=per.get)
            out.append((round(t, 3), top, per[top] / len(inside), len(inside)))
        t += width
    return out


def peak_in_flight(reqs: list[dict]) -> dict[str, tuple[int, float]]:
    """Backend -> (most requests it held at once, the lab second it first did), from each
    request's start and end as the balancers recorded them."""
    edges = sorted([(started_at(e), 1, e["backend"]) for e in reqs]
                   + [(e["t"], -1, e["backend"]) for e in reqs], key=lambda x: (x[0], x[1]))
    now: dict[str, int] = {}
    peak: dict[str, tuple[int, float]] = {}
    for t, step, backend in edges:
        now[backend] = now.get(backend, 0) + step
        if now[backend] > peak.get(backend, (0, 0.0))[0]:
            peak[backend] = (now[backend], round(t, 3))
    return peak


def grade(run):
    sc = run.scale
    target = float(run.targets.get("max_p99_ms", 350))
    cap = int(run.targets.get("max_in_flight", 24))
    start = float(run.targets.get("from_s", 0.5))
    reqs = [e for e in run.requests(start=start) if e.get("backend")]
    lat = [float(e.get("latency_ms") or 0) for e in reqs]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    peaks = peak_in_flight(reqs)
    top = max(peaks, key=lambda b: peaks[b][0], default=None)
    windows = window_shares(reqs, start, run.duration)  # whole windows of the traffic
    worst = max(windows, key=lambda w: w[2], default=None)
    mean_top = sum(w[2] for w in windows) / len(windows) if windows else 0.0
    bad = [e for e in run.requests() if failed(e)]
    per = count_by(reqs, lambda e: e["backend"])
    by_proxy = count_by(reqs, lambda e: e.get("proxy") or "-")
    checks = [
        (p99 is not None and p99 <= target,
         f"p99 of {len(reqs)} requests from lab second {start:g} on is {p99 or 0:.0f} ms "
         f"(p50 {p50 or 0:.0f} ms; the work itself takes 200 ms); target at most "
         f"{target:.0f} ms"),
        (top is not None and peaks[top][0] <= cap,
         (f"the most requests one server held at once: {peaks[top][0]} on {top} at "
          f"{sc.short(peaks[top][1])} (at most {cap} allowed; each server has 12 worker "
          f"threads and the fleet about 20 requests in flight in all)") if top
         else "no requests"),
        (not bad, f"{len(bad)} requests failed"),
    ]
    passed, evidence = verdict(checks)
    if worst is not None:
        evidence.append(f"INFO  the busiest server of each half second took {mean_top:.0%} "
                        f"of its requests on average, {worst[2]:.0%} at worst ({worst[1]} at "
                        f"{sc.short(worst[0])}); an even spread is 20 %")
    evidence.append("INFO  requests per backend: " + ", ".join(
        f"{b} {per.get(b, 0)}" for b in BACKENDS) + "; per balancer: " + ", ".join(
        f"{p} {n}" for p, n in sorted(by_proxy.items())))
    algo = (run.config.get("pools", {}).get("web", {}).get("balancer") or {})
    slowest = max(reqs, key=lambda e: float(e.get("latency_ms") or 0), default=None)
    return Result(
        passed=passed,
        headline=(f"p99 {p99 or 0:.0f} ms with {algo.get('algorithm', 'round_robin')} on "
                  f"{algo.get('load', 'local')} load; one server held up to "
                  f"{peaks[top][0] if top else 0} requests at once"),
        evidence=evidence,
        metrics={"p99_ms": p99, "p50_ms": p50, "worst_window_share": worst[2] if worst
                 else None, "mean_top_share": round(mean_top, 3), "per_backend": per,
                 "per_proxy": by_proxy, "failed": len(bad), "requests": len(reqs),
                 "peak_in_flight": {b: p[0] for b, p in peaks.items()}},
        chart=backend_chart(run, list(BACKENDS), bucket=0.25, marker_kinds=["fault"]),
        diagrams=drop_none([request_diagram(slowest, "The slowest request: where it waited")]))
