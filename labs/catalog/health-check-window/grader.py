"""Health-check window: failures between b2's freeze and its removal; no false removals."""
from labs.framework.grading import Result, backend_chart, drop_none, health_diagram, \
    moment_diagram, verdict
from labs.framework.recording import failed


def grade(run):
    sc = run.scale
    target = int(run.targets.get("max_failed", 10))
    freeze = run.mark("b2 freezes")
    t_freeze = freeze["t"] if freeze else 1.0
    removed = run.first_change("b2", "unhealthy", after=t_freeze, kind="health")
    t_removed = removed["t"] if removed else run.end
    # Counted once: the requests that began between the freeze and the removal and
    # failed (some end later, at the response timeout). Headline, evidence, metrics and
    # the diagram all use this list.
    window = [e for e in run.requests(start=t_freeze, end=t_removed) if failed(e)]
    false_removals = [e for e in run.state_changes(new="unhealthy", kind="health")
                      if e.get("backend") != "b2"]
    b4_probe_fails = sum(int(e.get("count", 1)) for e in run.of_type("health_probe")
                         if e.get("backend") == "b4" and not e.get("ok"))
    checks = []
    if removed:
        checks.append((len(window) <= target,
                       f"between b2's freeze (at {sc.short(t_freeze)}) and its removal "
                       f"{sc.both(t_removed - t_freeze)} later, {len(window)} requests failed; "
                       f"the target is at most {target}"))
    else:
        checks.append((False, f"b2 froze at {sc.short(t_freeze)} and was still in rotation "
                       f"when the traffic ended {sc.both(run.end - t_freeze)} later; "
                       f"{len(window)} requests failed meanwhile (target at most {target})"))
    if false_removals:
        first = false_removals[0]
        checks.append((False, f"{first['backend']} was taken out of rotation at "
                       f"{sc.short(first['t'])} although it was alive: {first['cause']} "
                       f"({len(false_removals)} false removal(s) in all)"))
    else:
        checks.append((True, f"no false removal: b4's checks failed {b4_probe_fails} time(s) "
                       "during its stalls, never enough in a row to remove it"))
    passed, evidence = verdict(checks)
    health = run.config.get("pools", {}).get("web", {}).get("health") or {}
    evidence.append(f"INFO  your checks: interval {health.get('interval', '2s')}, timeout "
                    f"{health.get('timeout', '1s')}, unhealthy_threshold "
                    f"{health.get('unhealthy_threshold', 3)} (lab time; ×{sc.factor:g} in "
                    f"production)")
    victim = false_removals[0]["backend"] if false_removals else None
    chart = backend_chart(run, ["b1", "b2", "b3", "b4"], marker_kinds=["fault", "admin"])
    # The window on the chart, with the same count as the headline.
    chart["markers"].append({"t": round(t_removed, 3),
                             "label": (f"b2 out: {len(window)} failed since freeze"
                                       if removed else f"still in: {len(window)} failed")})
    return Result(
        passed=passed,
        headline=(f"{len(window)} requests failed while frozen b2 stayed in rotation for "
                  f"{sc.both(t_removed - t_freeze)} (target at most {target})"
                  + (f"; {victim} was removed by mistake" if victim else "")),
        evidence=evidence,
        metrics={"failed_in_window": len(window),
                 "window_s": round(t_removed - t_freeze, 3),
                 "window_prod_s": round(sc.prod(t_removed - t_freeze), 2),
                 "b2_removed": bool(removed), "false_removals": len(false_removals),
                 "b4_probe_failures": b4_probe_fails, "target_max_failed": target},
        chart=chart,
        diagrams=drop_none([
            health_diagram(run, "b2", "b2 freezes: the checks that noticed it",
                           start=t_freeze - 0.3, end=t_removed + 0.3),
            health_diagram(run, victim, f"{victim}: removed although alive",
                           start=false_removals[0]["t"] - 1.5, end=false_removals[0]["t"] + 0.2)
            if victim else None,
            # The same list the headline counts: rows drawn + rows folded == len(window).
            moment_diagram(run, "From the freeze to the removal", t_freeze - 0.05,
                           t_removed + 0.05, ["b2"], failures=window),
        ]))
