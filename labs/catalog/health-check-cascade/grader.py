"""Cascade: backends removed by a load-dependent deep check; requests failed meanwhile."""
from labs.framework.grading import Result, backend_chart, drop_none, health_diagram, \
    moment_diagram, verdict
from labs.framework.recording import cause_of, count_by, failed


def grade(run):
    sc = run.scale
    share_target = float(run.targets.get("max_failed_share", 0.01))
    reqs = run.requests()
    bad = [e for e in reqs if failed(e)]
    removals = run.state_changes(new="unhealthy", kind="health")
    # A backend's own answers: did it ever fail a real request it was given?
    own_fail = count_by([e for e in bad if e.get("backend") and not e.get("proxy_error")],
                        lambda e: e["backend"])
    wrongly = [e for e in removals if not own_fail.get(e["backend"])]
    where = ", ".join(f"{e['backend']} at {sc.short(e['t'])}" for e in wrongly[:4])
    order = []
    for e in wrongly:
        if e["backend"] not in order:
            order.append(e["backend"])
    share = len(bad) / len(reqs) if reqs else 0.0
    causes = count_by(bad, cause_of)
    checks = [
        (not wrongly,
         "no backend that could serve was taken out of rotation" if not wrongly else
         f"{len(order)} backends that served their own requests fine were taken out of "
         f"rotation one after another ({where}); "
         f"first cause: {wrongly[0]['cause']}"),
        (share <= share_target,
         f"{len(bad)} of {len(reqs)} requests failed ({share:.1%}; target at most "
         f"{share_target:.0%})" + (": " + ", ".join(f"{n} {c}" for c, n in causes.items())
                                   if causes else "")),
    ]
    passed, evidence = verdict(checks)
    no_backend = [e for e in run.of_type("pool") if e.get("what") == "no_eligible"]
    if no_backend:
        evidence.append(f"INFO  the pool had no eligible backend at {sc.both(no_backend[0]['t'])}")
    first = wrongly[0] if wrongly else None
    return Result(
        passed=passed,
        headline=(f"{len(order)} healthy backends removed, {len(bad)} requests failed"
                  if wrongly else f"no backend removed; {len(bad)} of {len(reqs)} requests failed"),
        evidence=evidence,
        metrics={"backends_removed": len(order), "removals": len(removals),
                 "failed": len(bad), "requests": len(reqs), "failed_share": round(share, 4),
                 "causes": causes, "target_max_failed_share": share_target},
        chart=backend_chart(run, ["b1", "b2", "b3", "b4"], bucket=0.5,
                            title="Requests per second by backend, and failures"),
        diagrams=drop_none([
            health_diagram(run, first["backend"], f"{first['backend']}: the deep check "
                           "slows down with the load", start=first["t"] - 1.5,
                           end=first["t"] + 0.3) if first else None,
            # Every failed request the headline counts, whenever it happened.
            moment_diagram(run, "The cascade", first["t"] - 0.2, first["t"] + 2.5,
                           order or ["b1"], failures=bad) if first else None,
        ]))
