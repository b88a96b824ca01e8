"""Herding: how much of each half second one backend took, and the p99 it cost."""
from labs.framework.grading import Result, backend_chart, drop_none, request_diagram, verdict
from labs.framework.recording import count_by, failed, percentile

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


def grade(run):
    sc = run.scale
    target = float(run.targets.get("max_p99_ms", 150))
    cap = float(run.targets.get("max_window_share", 0.6))
    start = float(run.targets.get("from_s", 0.5))
    reqs = [e for e in run.requests(start=start) if e.get("backend")]
    lat = [float(e.get("latency_ms") or 0) for e in reqs]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    windows = window_shares(reqs, start, run.duration)  # whole windows of the traffic
    worst = max(windows, key=lambda w: w[2], default=None)
    mean_top = sum(w[2] for w in windows) / len(windows) if windows else 0.0
    bad = [e for e in run.requests() if failed(e)]
    per = count_by(reqs, lambda e: e["backend"])
    by_proxy = count_by(reqs, lambda e: e.get("proxy") or "-")
    checks = [
        (p99 is not None and p99 <= target,
         f"p99 of {len(reqs)} requests from lab second {start:g} on is {p99 or 0:.0f} ms "
         f"(p50 {p50 or 0:.0f} ms; the work itself takes 50 ms); target at most "
         f"{target:.0f} ms"),
        (worst is not None and worst[2] <= cap,
         (f"the busiest backend took {worst[2]:.0%} of a half second's requests at worst "
          f"({worst[1]} at {sc.short(worst[0])}), {mean_top:.0%} on average (at most "
          f"{cap:.0%} allowed; an even spread is 20 %)") if worst else "no requests"),
        (not bad, f"{len(bad)} requests failed"),
    ]
    passed, evidence = verdict(checks)
    evidence.append("INFO  requests per backend: " + ", ".join(
        f"{b} {per.get(b, 0)}" for b in BACKENDS) + "; per balancer: " + ", ".join(
        f"{p} {n}" for p, n in sorted(by_proxy.items())))
    algo = (run.config.get("pools", {}).get("web", {}).get("balancer") or {})
    slowest = max(reqs, key=lambda e: float(e.get("latency_ms") or 0), default=None)
    return Result(
        passed=passed,
        headline=(f"p99 {p99 or 0:.0f} ms with {algo.get('algorithm', 'round_robin')} on "
                  f"{algo.get('load', 'local')} load; one backend took up to "
                  f"{worst[2] if worst else 0:.0%} of a half second"),
        evidence=evidence,
        metrics={"p99_ms": p99, "p50_ms": p50, "worst_window_share": worst[2] if worst
                 else None, "mean_top_share": round(mean_top, 3), "per_backend": per,
                 "per_proxy": by_proxy, "failed": len(bad), "requests": len(reqs)},
        chart=backend_chart(run, list(BACKENDS), bucket=0.25, marker_kinds=["fault"]),
        diagrams=drop_none([request_diagram(slowest, "The slowest request: where it waited")]))
