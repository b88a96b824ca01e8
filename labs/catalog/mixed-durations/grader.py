"""Mixed durations: the quick requests' p99, and how busy the server each one met was."""
from labs.framework.grading import Result, drop_none, latency_chart, request_diagram, verdict
from labs.framework.recording import failed, percentile

BACKENDS = ("b1", "b2", "b3", "b4")


def in_flight_there(e: dict) -> int | None:
    """Requests already in flight on the chosen server when this one was sent (the
    balancer's own view, from the decision's candidates)."""
    for c in e.get("candidates") or []:
        if c.get("name") == e.get("backend"):
            return c.get("outstanding")
    return None


def grade(run):
    target = float(run.targets.get("max_p99_ms", 250))
    start = float(run.targets.get("from_s", 1))
    prefix = run.targets.get("path_prefix", "/api/")
    reqs = [e for e in run.requests(start=start) if e.get("backend")]
    quick = [e for e in reqs if (e.get("path") or "").startswith(prefix)]
    slow = [e for e in reqs if not (e.get("path") or "").startswith(prefix)]
    lat = [float(e.get("latency_ms") or 0) for e in quick]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    bad = [e for e in run.requests() if failed(e)]
    checks = [
        (p99 is not None and p99 <= target,
         f"p99 of {len(quick)} quick lookups from lab second {start:g} on is "
         f"{p99 if p99 is not None else 0:.0f} ms (p50 {p50 or 0:.1f} ms); the target is at "
         f"most {target:.0f} ms"),
        (not bad, f"{len(bad)} requests failed"),
    ]
    passed, evidence = verdict(checks)
    slowest = sorted(quick, key=lambda e: float(e.get("latency_ms") or 0))
    tail = slowest[-max(1, len(slowest) // 100):] if slowest else []
    depth_tail = [d for d in (in_flight_there(e) for e in tail) if d is not None]
    depth_all = [d for d in (in_flight_there(e) for e in quick) if d is not None]
    if depth_tail:
        evidence.append(f"INFO  the slowest 1% of lookups were sent to a server that already "
                        f"had a median of {percentile(depth_tail, 50):.0f} requests in flight "
                        f"(all lookups: {percentile(depth_all, 50):.0f}); three threads each")
    per = {b: sum(1 for e in slow if e["backend"] == b) for b in BACKENDS}
    evidence.append(f"INFO  {len(slow)} slow exports finished from lab second {start:g} on "
                    f"({', '.join(f'{b} {n}' for b, n in per.items())}); each stands for "
                    f"{run.scale.both(1.0)}")
    algo = (run.config.get("pools", {}).get("web", {}).get("balancer") or {}).get(
        "algorithm", "round_robin")
    worst = slowest[-1] if slowest else None
    return Result(
        passed=passed,
        headline=f"quick lookups' p99 {p99 or 0:.0f} ms with {algo} (target at most "
                 f"{target:.0f} ms)",
        evidence=evidence,
        metrics={"quick_p99_ms": p99, "quick_p50_ms": p50, "quick": len(quick),
                 "slow": len(slow), "failed": len(bad), "target_max_p99_ms": target,
                 "tail_in_flight_p50": percentile(depth_tail, 50) if depth_tail else None,
                 "slow_per_backend": per},
        chart=latency_chart(run, "Quick lookups: p99 latency per half second", bucket=0.5,
                            groups={"lookups": lambda e: (e.get("path") or "").startswith(
                                prefix) and bool(e.get("backend"))}),
        diagrams=drop_none([request_diagram(worst, "The slowest lookup: where it waited")]))
