"""Outlier ejection: failures on the fast-failing b3, and how much of the pool was out."""
from labs.framework.grading import Result, backend_chart, drop_none, moment_diagram, \
    verdict
from labs.framework.recording import cause_of, count_by, failed

BACKENDS = ("b1", "b2", "b3", "b4")


def most_ejected(run) -> tuple[int, float | None]:
    """The largest number of servers ejected at the same moment, and when."""
    out: set[str] = set()
    best, when = 0, None
    for e in sorted(run.state_changes(kind="ejection"), key=lambda e: e["t"]):
        if e.get("new") == "ejected":
            out.add(e.get("backend"))
        else:
            out.discard(e.get("backend"))
        if len(out) > best:
            best, when = len(out), e["t"]
    return best, when


def grade(run):
    sc = run.scale
    limit = int(run.targets.get("max_b3_failed", 40))
    share_cap = float(run.targets.get("max_ejected_share", 0.5))
    reqs = run.requests()
    served = [e for e in reqs if e.get("backend")]
    per = count_by(served, lambda e: e["backend"])
    b3_failed = [e for e in served if e["backend"] == "b3" and failed(e)]
    no_backend = [e for e in reqs if failed(e) and cause_of(e) == "no-backend"]
    peak, peak_t = most_ejected(run)
    ejections = [e for e in run.state_changes(backend="b3", kind="ejection")
                 if e.get("new") == "ejected"]
    capped = [e for e in run.of_type("pool") if e.get("what") == "ejection_capped"]
    checks = [
        (len(b3_failed) <= limit,
         f"b3 answered {per.get('b3', 0)} of {len(served)} requests and {len(b3_failed)} of "
         f"them failed (target at most {limit}); the others: "
         + ", ".join(f"{b} {per.get(b, 0)}" for b in BACKENDS if b != "b3")),
        (peak <= share_cap * len(BACKENDS) and not no_backend,
         f"at most {peak} of {len(BACKENDS)} servers were ejected at once"
         + (f" (at {sc.short(peak_t)})" if peak_t is not None else "")
         + f" (at most {share_cap:.0%} may be); {len(no_backend)} requests failed for want "
         "of a server (503 no-backend)"),
    ]
    passed, evidence = verdict(checks)
    if ejections:
        evidence.append(f"INFO  b3 was ejected {len(ejections)} time(s), first at "
                        f"{sc.short(ejections[0]['t'])}: {ejections[0].get('cause', '')}")
    if capped:
        evidence.append(f"INFO  the cap refused to eject more of the pool {len(capped)} "
                        f"time(s), first at {sc.short(capped[0]['t'])}: {capped[0].get('detail')}")
    all_failed = [e for e in reqs if failed(e)]
    evidence.append(f"INFO  {len(all_failed)} of {len(reqs)} requests failed in all; the "
                    f"cache blip on b1, b2, b4 lasts {sc.both(0.25)}")
    fault = run.mark("b3 fails fast (500 at once)")
    t_fault = fault["t"] if fault else 0.5
    return Result(
        passed=passed,
        headline=(f"{len(b3_failed)} requests failed on b3 (it answered "
                  f"{per.get('b3', 0) / len(served) if served else 0:.0%} of all); "
                  f"at most {peak} of 4 servers ejected at once"),
        evidence=evidence,
        metrics={"b3_failed": len(b3_failed), "per_backend": per, "requests": len(reqs),
                 "failed": len(all_failed), "no_backend": len(no_backend),
                 "max_ejected": peak, "b3_ejections": len(ejections)},
        chart=backend_chart(run, list(BACKENDS), bucket=0.25, marker_kinds=["fault"]),
        diagrams=drop_none([moment_diagram(run, "b3 starts failing fast", t_fault - 0.02,
                                           t_fault + 0.3, ["b3"], failures=[
                                               e for e in b3_failed
                                               if t_fault - 0.02 <= e["t"] <= t_fault + 0.3])]))
