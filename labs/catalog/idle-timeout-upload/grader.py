"""Idle timeout: uploads killed by the body idle timeout; the timeout within reason."""
from labs.framework.grading import Result, count_chart, drop_none, request_diagram, verdict
from labs.framework.recording import cause_of, count_by, failed
from proxy.durations import parse_duration


def grade(run):
    sc = run.scale
    stall = float(run.targets.get("stall_s", 0.8))
    factor = float(run.targets.get("max_factor", 5))
    listener = (run.config.get("listeners") or {}).get("web") or {}
    timeout = parse_duration((listener.get("timeouts") or {}).get("request_body", "60s"))
    uploads = [e for e in run.requests() if e.get("path", "").startswith("/upload")]
    dead = [e for e in uploads if failed(e)]
    causes = count_by(dead, cause_of)
    checks = [
        (not dead, f"{len(dead)} of {len(uploads)} uploads failed" + (
            ": " + ", ".join(f"{n} × {c} (status {next(e['status'] for e in dead if cause_of(e) == c)}, "
                             f"termination {next(e['termination'] for e in dead if cause_of(e) == c)})"
                             for c, n in causes.items()) if dead else "")),
        (timeout <= factor * stall,
         f"the body idle timeout is {sc.both(timeout)}; the longest stall is {sc.both(stall)}, "
         f"so it may be at most {factor:g}× that ({sc.short(factor * stall)})"),
    ]
    passed, evidence = verdict(checks)
    return Result(
        passed=passed,
        headline=f"{len(dead)} of {len(uploads)} uploads failed with request_body "
                 f"{sc.short(timeout)}",
        evidence=evidence,
        metrics={"uploads": len(uploads), "failed": len(dead), "causes": causes,
                 "request_body_timeout_s": timeout, "stall_s": stall},
        chart=count_chart(run, "Uploads per second, by outcome",
                          {"completed": lambda e: e.get("path", "").startswith("/upload")
                           and not failed(e),
                           "killed": lambda e: e.get("path", "").startswith("/upload")
                           and failed(e)}, bucket=0.5),
        diagrams=drop_none([request_diagram(dead[0] if dead else None,
                                            "A stalled upload, ended by the proxy")]))
