"""Rolling deploy: failed requests during the deploy; did it finish?"""
from labs.framework.grading import Result, backend_chart, drop_none, moment_diagram, \
    request_diagram, verdict
from labs.framework.recording import cause_of, count_by, failed


def grade(run):
    sc = run.scale
    target = int(run.targets.get("max_failed", 0))
    begin = run.mark("deploy starts")
    done = run.mark("deploy done")
    t0 = begin["t"] if begin else 1.0
    t1 = done["t"] if done else run.end
    restarted = [m["backend"] for m in run.marks(kind="deploy") if m.get("label", "").startswith(
        "restart ")]
    bad = [e for e in run.requests(start=t0, end=t1 + 0.3) if failed(e)]
    causes = count_by(bad, cause_of)
    per_backend = count_by(bad, lambda e: e.get("backend") or "none")
    checks = [
        (len(bad) <= target,
         f"{len(bad)} requests failed during the deploy ({sc.both(t1 - t0)}); target at most "
         f"{target}" + (": " + ", ".join(f"{n} × {c}" for c, n in causes.items()) if bad else "")),
        (bool(done) and len(set(restarted)) == 3,
         f"the deploy replaced {len(set(restarted))} of 3 servers"
         + (f" and finished {sc.both(t1 - t0)} after it began" if done else
            " and had not finished when the traffic ended")),
    ]
    passed, evidence = verdict(checks)
    if bad:
        evidence.append("INFO  failures by backend: " + ", ".join(f"{b}: {n}" for b, n in
                                                                per_backend.items()))
    warm = next((e for e in bad if cause_of(e) == "backend-503"), None)
    cut = next((e for e in bad if cause_of(e) != "backend-503"), None)
    first = bad[0] if bad else None
    return Result(
        passed=passed,
        headline=f"{len(bad)} requests failed during the rolling deploy",
        evidence=evidence,
        metrics={"failed": len(bad), "causes": causes, "deploy_s": round(t1 - t0, 3),
                 "deploy_prod_s": round(sc.prod(t1 - t0), 1), "restarted": sorted(set(restarted)),
                 "finished": bool(done)},
        chart=backend_chart(run, ["b1", "b2", "b3"], bucket=0.5, marker_kinds=["deploy"]),
        diagrams=drop_none([
            request_diagram(warm, "A new process answered while it was warming up"),
            request_diagram(cut, "A request lost with the old process"),
            moment_diagram(run, "The first server's turn", t0 - 0.05,
                           (first or {"t": t0 + 1.5})["t"] + 0.3 if first else t0 + 1.5,
                           ["b1"]),
        ]))
