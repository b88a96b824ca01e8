"""Cross-zone: each server's share of the requests and its p99, and where the load came
from (each node's zone, and the zones it could send to)."""
from labs.framework.grading import Result, backend_chart, drop_none, request_diagram, verdict
from labs.framework.recording import count_by, failed, percentile

BACKENDS = ("b1", "b2", "b3", "b4")


def zone_of(e: dict) -> dict:
    return e.get("zone") or {}


def per_backend(reqs: list[dict]) -> dict[str, dict]:
    """Per server: requests, share of all, p99 latency (ms), and the nodes they came via."""
    total = len(reqs)
    out = {}
    for b in BACKENDS:
        mine = [e for e in reqs if e.get("backend") == b]
        out[b] = {"requests": len(mine), "share": len(mine) / total if total else 0.0,
                  "p99_ms": percentile([float(e.get("latency_ms") or 0) for e in mine], 99),
                  "via": count_by(mine, lambda e: e.get("listener"))}
    return out


def crossed(e: dict) -> bool:
    """Sent to a server in another zone than the node's (billed traffic in a cloud)."""
    z = zone_of(e)
    return bool(z.get("listener_zone") and z.get("backend_zone")
                and z["listener_zone"] != z["backend_zone"])


def per_node_p99(reqs: list[dict]) -> dict[str, float | None]:
    """The p99 latency the users behind each node (listener) saw."""
    nodes = sorted({e.get("listener") for e in reqs if e.get("listener")})
    return {n: percentile([float(e.get("latency_ms") or 0) for e in reqs
                           if e.get("listener") == n], 99) for n in nodes}


def grade(run):
    max_share = float(run.targets.get("max_share", 0.35))
    max_ratio = float(run.targets.get("max_p99_ratio", 1.4))
    reqs = [e for e in run.requests() if e.get("backend")]
    every = run.requests()
    bad = [e for e in every if failed(e)]
    per = per_backend(reqs)
    hot = max(BACKENDS, key=lambda b: per[b]["share"])
    node_p99 = per_node_p99(reqs)
    worst = max(node_p99, key=lambda n: node_p99[n] or 0) if node_p99 else None
    best = min(node_p99, key=lambda n: node_p99[n] or 0) if node_p99 else None
    worst_p99 = node_p99.get(worst) if worst else None
    ratio = (worst_p99 / node_p99[best]) if worst and node_p99.get(best) else None
    p99 = percentile([float(e.get("latency_ms") or 0) for e in reqs], 99)
    checks = [
        (bool(reqs) and per[hot]["share"] <= max_share,
         "share of the requests per server: " + ", ".join(
             f"{b} {per[b]['share']:.0%}" for b in BACKENDS)
         + f"; the busiest, {hot}, answered {per[hot]['share']:.0%} (target at most "
           f"{max_share:.0%})"),
        (ratio is not None and ratio <= max_ratio and not bad,
         "p99 latency of the users behind each node: " + ", ".join(
             f"{n} {v or 0:.0f} ms" for n, v in node_p99.items())
         + f"; {worst}'s users wait {ratio or 0:.1f} times as long as {best}'s (target at "
           f"most {max_ratio:g} times); {len(bad)} requests failed"),
    ]
    passed, evidence = verdict(checks)
    evidence.append("INFO  p99 per server: " + ", ".join(
        f"{b} {per[b]['p99_ms'] or 0:.0f} ms" for b in BACKENDS)
        + f"; all requests together: {p99 or 0:.0f} ms "
          f"({run.scale.both((p99 or 0) / 1000)})")
    nodes = count_by(reqs, lambda e: e.get("listener"))
    evidence.append("INFO  requests per node: " + ", ".join(
        f"{n} ({zone_of(next(e for e in reqs if e.get('listener') == n)).get('listener_zone')}) "
        f"{c}" for n, c in sorted(nodes.items())))
    across = [e for e in reqs if crossed(e)]
    evidence.append(f"INFO  {len(across)} of {len(reqs)} requests crossed zones "
                    f"({len(across) / len(reqs) if reqs else 0:.0%}): the price of cross-zone "
                    "balancing is traffic between zones")
    example = next((e for e in reqs if e.get("backend") == hot
                    and e.get("listener") == "node-a"), reqs[0] if reqs else None)
    if example is not None and zone_of(example).get("reason"):
        evidence.append(f"INFO  a request via {example.get('listener')}: "
                        f"{zone_of(example)['reason']}")
    return Result(
        passed=passed,
        headline=(f"{hot} answered {per[hot]['share']:.0%} of the requests; the users behind "
                  f"{worst} saw a p99 of {worst_p99 or 0:.0f} ms ({ratio or 0:.1f}x {best}'s)"),
        evidence=evidence,
        metrics={"per_backend": {b: per[b]["requests"] for b in BACKENDS},
                 "shares": {b: round(per[b]["share"], 3) for b in BACKENDS},
                 "p99_per_backend": {b: per[b]["p99_ms"] for b in BACKENDS},
                 "p99_ms": p99, "p99_per_node": node_p99, "worst_node": worst,
                 "worst_node_p99_ms": worst_p99, "p99_ratio": ratio, "hot": hot, "failed": len(bad), "requests": len(every),
                 "per_node": nodes, "cross_zone_requests": len(across),
                 "target_max_share": max_share, "target_max_p99_ratio": max_ratio},
        chart=backend_chart(run, list(BACKENDS), "Requests per second, by server",
                            bucket=0.5),
        diagrams=drop_none([request_diagram(example, f"A request via {example.get('listener')}"
                                            f" (zone {zone_of(example).get('listener_zone')})")
                            if example else None]))
