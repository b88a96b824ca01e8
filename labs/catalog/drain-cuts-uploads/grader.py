"""Draining: requests cut by a drain; the delay against the longest request."""
from labs.framework.grading import Result, backend_chart, drop_none, health_diagram, \
    request_diagram, verdict
from proxy.durations import parse_duration


def grade(run):
    sc = run.scale
    factor = float(run.targets.get("max_delay_factor", 4))
    pool = (run.config.get("pools") or {}).get("web") or {}
    delay = parse_duration(pool.get("deregistration_delay", "30s"))
    cut = [e for e in run.requests() if e.get("termination") == "PD"]
    drains = run.of_type("drain")
    started = {e["backend"]: e for e in drains if e.get("what") == "started"}
    completed = {e["backend"]: e for e in drains if e.get("what") == "completed"}
    uploads = [e for e in run.requests() if "/upload" in e.get("path", "")
               and e.get("termination") == "--"]
    longest = max((float(e.get("latency_ms") or 0) / 1000 for e in uploads), default=0.0)
    checks = [(not cut, f"{len(cut)} requests were cut by a drain (target 0)" + (
        f": {sum(1 for e in cut if '/upload' in e.get('path', ''))} of them uploads"
        if cut else ""))]
    if longest:
        checks.append((delay <= factor * longest,
                       f"your deregistration_delay is {sc.both(delay)}; the longest request took "
                       f"{sc.both(longest)}, so the delay may be at most {factor:g}× that "
                       f"({sc.short(factor * longest)})"))
    passed, evidence = verdict(checks)
    for b, s in started.items():
        c = completed.get(b)
        if c:
            evidence.append(f"INFO  draining {b} took {sc.both(c['t'] - s['t'])}: {c.get('detail')}")
    first_cut = cut[0] if cut else None
    drained = first_cut["backend"] if first_cut else next(iter(started), "b2")
    return Result(
        passed=passed,
        headline=f"{len(cut)} requests cut by drains; delay {sc.short(delay)} against a "
                 f"longest request of {sc.short(longest)}",
        evidence=evidence,
        metrics={"cut": len(cut), "deregistration_delay_s": delay, "longest_request_s":
                 round(longest, 3), "drains": {b: round(completed[b]["t"] - s["t"], 3)
                                               for b, s in started.items() if b in completed}},
        chart=backend_chart(run, ["b1", "b2", "b3", "b4"], bucket=0.5,
                            title="Requests finishing per second, by backend (cut ones fail)"),
        diagrams=drop_none([
            health_diagram(run, drained, f"Draining {drained}",
                           start=(started.get(drained) or {"t": 0})["t"] - 0.1,
                           end=(completed.get(drained) or {"t": run.end})["t"] + 0.1),
            request_diagram(first_cut, "An upload cut at the drain deadline"),
        ]))
