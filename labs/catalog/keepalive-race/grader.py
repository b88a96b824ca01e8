"""Keep-alive race: 502s on reused connections closed by the backend."""
from labs.framework.grading import Result, count_chart, drop_none, request_diagram, verdict
from labs.framework.recording import cause_of, count_by, failed


def grade(run):
    target = int(run.targets.get("max_failed", 0))
    reqs = run.requests()
    bad = [e for e in reqs if failed(e)]
    races = [e for e in bad if "keep-alive race" in (e.get("error") or "")
             or cause_of(e) == "backend-closed"]
    retried = [e for e in reqs if any("keep-alive race" in (r.get("error") or "")
                                      for r in e.get("retries") or [])]
    pool = (run.config.get("pools") or {}).get("web") or {}
    idle = ((pool.get("timeouts") or {}).get("backend_idle")) or "30s"
    checks = [(len(bad) <= target,
               f"{len(bad)} of {len(reqs)} requests failed ({len(races)} of them 502 from the "
               f"keep-alive race: a reused connection reset before any response byte); "
               f"target at most {target}")]
    passed, evidence = verdict(checks)
    evidence.append(f"INFO  proxy backend_idle {idle} against gunicorn's keep-alive of 1 s; "
                    f"{len(retried)} requests were saved by a retry")
    return Result(
        passed=passed,
        headline=f"{len(races)} requests lost to the keep-alive race out of {len(reqs)}",
        evidence=evidence,
        metrics={"requests": len(reqs), "failed": len(bad), "race_502": len(races),
                 "retried": len(retried), "causes": count_by(bad, cause_of),
                 "backend_idle": idle},
        chart=count_chart(run, "Requests per second, and 502s from the race",
                          {"answered": lambda e: not failed(e), "502": failed}, bucket=0.5),
        diagrams=drop_none([request_diagram(races[0] if races else (retried[0] if retried
                                                                    else None),
                                            "Lost on a reused connection gunicorn had just "
                                            "closed" if races else "Saved by a retry")]))
