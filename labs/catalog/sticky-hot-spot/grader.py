"""Sticky hot spot: the busiest backend against the pool's average; lost sessions."""
from labs.framework.grading import Result, bar_chart, drop_none, request_diagram, verdict
from labs.framework.recording import count_by, percentile

BACKENDS = ["b1", "b2", "b3", "b4"]


def grade(run):
    max_ratio = float(run.targets.get("max_hot_ratio", 1.5))
    max_lost = float(run.targets.get("max_session_fail_share", 0.01))
    served = [e for e in run.requests(start=0.5) if e.get("backend")]
    per = count_by(served, lambda e: e["backend"])
    counts = [per.get(b, 0) for b in BACKENDS]
    avg = sum(counts) / len(BACKENDS) if served else 0
    hot = max(BACKENDS, key=lambda b: per.get(b, 0))
    ratio = per.get(hot, 0) / avg if avg else 0
    duration = max(0.1, run.end - 0.5)
    profile = [e for e in run.requests() if e.get("path", "").startswith("/profile")]
    lost = [e for e in profile if int(e.get("status") or 0) == 401]
    lost_share = len(lost) / len(profile) if profile else 0
    lat_hot = percentile([float(e["latency_ms"]) for e in served if e["backend"] == hot], 99)
    lat_rest = percentile([float(e["latency_ms"]) for e in served if e["backend"] != hot], 99)
    checks = [
        (ratio <= max_ratio,
         f"the pool's average is {avg / duration:.0f} requests/s per backend; the busiest, "
         f"{hot}, served {per.get(hot, 0) / duration:.0f}/s: {ratio:.1f}× the average "
         f"(target at most {max_ratio:g}×)"),
        (lost_share <= max_lost,
         f"{len(lost)} of {len(profile)} profile requests ({lost_share:.1%}) hit a backend "
         f"that did not know the session (401); target at most {max_lost:.0%}"),
    ]
    passed, evidence = verdict(checks)
    evidence.append(f"INFO  p99 on {hot}: {lat_hot or 0:.0f} ms; on the others: "
                    f"{lat_rest or 0:.0f} ms (sessions: {run.settings.get('sessions')})")
    sticky = (run.config.get("pools", {}).get("web", {}) or {}).get("sticky")
    example = lost[0] if lost else next((e for e in served if e["backend"] == hot
                                         and (e.get("sticky") or {}).get("hit")), None)
    return Result(
        passed=passed,
        headline=(f"busiest backend {hot} at {ratio:.1f}× the pool average; "
                  f"{len(lost)} lost sessions"),
        evidence=evidence,
        metrics={"hot_backend": hot, "hot_ratio": round(ratio, 2),
                 "per_backend": {b: per.get(b, 0) for b in BACKENDS},
                 "average_per_backend": round(avg, 1), "lost_sessions": len(lost),
                 "profile_requests": len(profile), "sticky": bool(sticky),
                 "sessions": run.settings.get("sessions"),
                 "p99_hot_ms": lat_hot, "p99_others_ms": lat_rest},
        chart=bar_chart("Requests per backend (the dashed average hides the hot one)",
                        BACKENDS + ["average"], counts + [avg], "requests", run, highlight=hot),
        diagrams=drop_none([request_diagram(
            example, "A lost session: the backend never saw it" if lost else
            f"The heavy user's request, pinned to {hot} by the sticky cookie")]))
