"""Slow backend: the pool's p99 (requests from `from_s` on) against the target."""
from labs.framework.grading import Result, drop_none, latency_chart, request_diagram, \
    verdict
from labs.framework.recording import failed, percentile


def grade(run):
    target = float(run.targets.get("max_p99_ms", 200))
    start = float(run.targets.get("from_s", 1))
    reqs = [e for e in run.requests(start=start) if e.get("backend")]
    lat = [float(e.get("latency_ms") or 0) for e in reqs]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    per = {}
    for b in ("b1", "b2", "b3", "b4"):
        mine = [float(e.get("latency_ms") or 0) for e in reqs if e["backend"] == b]
        per[b] = {"requests": len(mine), "p99": percentile(mine, 99), "p50": percentile(mine, 50)}
    bad = [e for e in reqs if failed(e)]
    share3 = per["b3"]["requests"] / len(reqs) if reqs else 0
    checks = [(p99 is not None and p99 <= target,
               f"p99 of {len(reqs)} requests from lab second {start:g} on is "
               f"{p99 if p99 is not None else '?':.0f} ms (p50 {p50 or 0:.0f} ms); the target is "
               f"at most {target:.0f} ms"),
              (per["b3"]["requests"] > 0, f"b3 stayed in the pool and served "
               f"{per['b3']['requests']} requests ({share3:.0%} of them; p99 on b3 "
               f"{(per['b3']['p99'] or 0):.0f} ms, on b1 {(per['b1']['p99'] or 0):.0f} ms)")]
    if bad:
        checks.append((len(bad) <= 0.01 * len(reqs), f"{len(bad)} requests failed"))
    passed, evidence = verdict(checks)
    # Why: how many requests were already waiting on b3 when one more was sent there,
    # compared with the least busy other backend at that moment (the balancer's own view).
    excess = []
    for e in reqs:
        if e["backend"] != "b3":
            continue
        counts = {c.get("name"): c.get("outstanding", 0) for c in e.get("candidates") or []}
        others = [v for k, v in counts.items() if k != "b3"]
        if "b3" in counts and others:
            excess.append(counts["b3"] - min(others))
    if excess:
        evidence.append(f"INFO  each request sent to b3 found a median of "
                        f"{percentile(excess, 50):.0f} more requests waiting there than on the "
                        f"least busy backend (p90 {percentile(excess, 90):.0f}): that queue is "
                        "the p99")
    algo = (run.config.get("pools", {}).get("web", {}).get("balancer") or {}).get(
        "algorithm", "round_robin")
    slowest = max(reqs, key=lambda e: float(e.get("latency_ms") or 0), default=None)
    return Result(
        passed=passed,
        headline=f"p99 {p99 or 0:.0f} ms with {algo} (target at most {target:.0f} ms)",
        evidence=evidence,
        metrics={"p99_ms": p99, "p50_ms": p50, "requests": len(reqs),
                 "b3_share": round(share3, 3), "b3_p99_ms": per["b3"]["p99"],
                 "locust_p99_ms": run.stats.get("p99"), "target_max_p99_ms": target,
                 "b3_queue_excess_p50": percentile(excess, 50) if excess else None,
                 "per_backend": per},
        chart=latency_chart(run, "p99 latency per half second: the pool and b3", bucket=0.5,
                            groups={"pool": lambda e: bool(e.get("backend")),
                                    "b3": lambda e: e.get("backend") == "b3"}),
        diagrams=drop_none([request_diagram(slowest, "The slowest request: where it waited")]))
