"""Lying health check: after b2's dependency goes down, how many requests still fail?"""
from labs.framework.grading import Result, backend_chart, drop_none, health_diagram, \
    request_diagram, verdict
from labs.framework.recording import failed


def grade(run):
    sc = run.scale
    target = int(run.targets.get("max_failed", 15))
    fault = run.mark("b2 loses its database")
    t_fault = fault["t"] if fault else 1.0
    after = run.requests(start=t_fault)
    bad = [e for e in after if failed(e)]
    on_b2 = [e for e in after if e.get("backend") == "b2"]
    removed = run.first_change("b2", "unhealthy", after=t_fault, kind="health") or \
        next((e for e in run.state_changes("b2", kind="ejection") if e["t"] >= t_fault), None)
    checks = [(len(bad) <= target,
               f"after b2 lost its database (at {sc.both(t_fault)}) {len(bad)} of {len(after)} "
               f"requests failed; the target is at most {target}")]
    if removed:
        checks.append((True, f"b2 was taken out of rotation {sc.both(removed['t'] - t_fault)} "
                       f"after the failure ({removed['cause']})"))
    else:
        probes = [e for e in run.of_type("health_probe") if e.get("backend") == "b2"
                  and e["t"] >= t_fault]
        ok = sum(int(e.get("count", 1)) for e in probes if e.get("ok"))
        checks.append((False, f"b2 was never taken out of rotation: {ok} of its health probes "
                       f"after the failure said it was fine, while {len(on_b2)} real requests "
                       f"went to it"))
    passed, evidence = verdict(checks)
    first_bad = next((e for e in bad if e.get("backend") == "b2"), bad[0] if bad else None)
    return Result(
        passed=passed,
        headline=(f"{len(bad)} requests failed after b2's dependency went down "
                  f"(target at most {target})"),
        evidence=evidence,
        metrics={"failed_after_fault": len(bad), "requests_after_fault": len(after),
                 "requests_to_b2_after_fault": len(on_b2),
                 "removed_after_s": round(removed["t"] - t_fault, 3) if removed else None,
                 "target_max_failed": target},
        chart=backend_chart(run, ["b1", "b2", "b3", "b4"]),
        diagrams=drop_none([
            health_diagram(run, "b2", "b2's health checks around the failure",
                           start=t_fault - 0.5, end=t_fault + 2.5),
            request_diagram(first_bad, "A request that failed on b2"),
        ]))
