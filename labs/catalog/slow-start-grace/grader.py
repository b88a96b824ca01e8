"""Slow start and grace: does the new backend b4 join, and how is it eased in?"""
from labs.framework.grading import Result, backend_chart, drop_none, health_diagram, verdict
from labs.framework.recording import failed


def grade(run):
    sc = run.scale
    min_served = int(run.targets.get("min_served", 20))
    max_failed = float(run.targets.get("max_failed_share", 0.01))
    registered = run.mark("b4 registered in the pool")
    t_reg = registered["t"] if registered else 1.5
    replacements = [m for m in run.timeline if m.get("kind") == "autoscaler"
                    and "replacement" in m.get("what", "") and "launching" in m.get("what", "")]
    healthy = run.first_change("b4", "healthy", after=t_reg, kind="health")
    served = run.requests(where=lambda e: e.get("backend") == "b4")
    reqs = run.requests(start=0.5)
    bad = [e for e in reqs if failed(e)]
    share_bad = len(bad) / len(reqs) if reqs else 0
    checks = [
        (bool(healthy) and len(served) >= min_served,
         (f"b4 became healthy {sc.both(healthy['t'] - t_reg)} after it was registered and "
          f"served {len(served)} requests (target at least {min_served})") if healthy else
         f"b4 never became healthy: {len(served)} requests served (target at least {min_served})"),
        (not replacements, f"the autoscaler replaced b4 {len(replacements)} time(s) because it "
         "failed its checks while warming up" if replacements else
         "b4 was never replaced"),
        (share_bad <= max_failed, f"{len(bad)} of {len(reqs)} requests failed "
         f"({share_bad:.1%}; target at most {max_failed:.0%})"),
    ]
    passed, evidence = verdict(checks)
    if healthy:
        t_h = healthy["t"]
        first_s = run.requests(start=t_h, end=t_h + 0.5)
        later = run.requests(start=t_h + 1.5)
        s1 = sum(1 for e in first_s if e.get("backend") == "b4") / max(1, len(first_s))
        s2 = sum(1 for e in later if e.get("backend") == "b4") / max(1, len(later))
        evidence.append(f"INFO  b4's share of the requests: {s1:.0%} in its first "
                        f"{sc.short(0.5)} in service, {s2:.0%} from {sc.short(1.5)} on "
                        "(slow start ramps it in; an even share is 25%)")
    return Result(
        passed=passed,
        headline=(f"b4 joined after {sc.short(healthy['t'] - t_reg)}" if healthy else
                  f"b4 never joined: replaced {len(replacements)} times"),
        evidence=evidence,
        metrics={"b4_healthy_after_s": round(healthy["t"] - t_reg, 3) if healthy else None,
                 "b4_served": len(served), "replacements": len(replacements),
                 "failed": len(bad), "requests": len(reqs)},
        chart=backend_chart(run, ["b1", "b2", "b3", "b4"], bucket=0.5),
        diagrams=drop_none([health_diagram(run, "b4", "b4's checks after it was registered",
                                           start=t_reg - 0.6, end=(healthy or {"t": run.end})["t"] + 0.3,
                                           limit=30)]))
