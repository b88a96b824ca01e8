"""Canary: the errors users saw, and what the rollout controller decided and why."""
from labs.framework.grading import Result, count_chart, drop_none, moment_diagram, verdict
from labs.framework.recording import failed, started_at

CANARY = "b4"


def canary_actions(run) -> list[dict]:
    """The controller's decisions as the timeline recorded them (steps, a rollback)."""
    return [m["canary"] for m in run.marks(kind="canary") if m.get("canary")]


def errors_by_step(run, actions: list[dict], failures: list[dict]) -> list[tuple[str, int]]:
    """Failed requests while the canary held each share (by start time)."""
    spans = []
    for i, a in enumerate(actions):
        end = actions[i + 1]["t"] if i + 1 < len(actions) else float("inf")
        name = f"{a['percent']:g}%" if a["action"] == "step" else "after the rollback"
        spans.append((name, a["t"], end))
    out = []
    for name, start, end in spans:
        out.append((name, sum(1 for e in failures if start <= started_at(e) < end)))
    return out


def grade(run):
    limit = int(run.targets.get("max_failed", 10))
    tried = int(run.targets.get("min_canary_requests", 3))
    reqs = run.requests()
    bad = [e for e in reqs if failed(e)]
    on_canary = [e for e in reqs if e.get("backend") == CANARY]
    bad_canary = [e for e in bad if e.get("backend") == CANARY]
    actions = canary_actions(run)
    rollback = next((a for a in actions if a["action"] == "rollback"), None)
    reached = max((a["percent"] for a in actions if a["action"] == "step"), default=0)
    checks = [
        (len(bad) <= limit,
         f"users saw {len(bad)} failed requests of {len(reqs)} ({len(bad_canary)} on the "
         f"canary {CANARY}); the target is at most {limit}"),
        (len(on_canary) >= tried,
         f"the canary answered {len(on_canary)} requests (it must be tried: at least {tried})"),
    ]
    passed, evidence = verdict(checks)
    if rollback:
        evidence.append(f"INFO  rolled back at {run.scale.short(rollback['t'])} with "
                        f"{rollback['percent']:g}% of the traffic: {rollback['why']}")
    else:
        evidence.append(f"INFO  never rolled back: the canary reached {reached:g}% of the "
                        "traffic and kept it to the end")
    for a in actions:
        if a["action"] == "step":
            evidence.append(f"INFO  {run.scale.short(a['t'])}: {a['why']}")
    steps = errors_by_step(run, actions, bad)
    if steps:
        evidence.append("INFO  failed requests while the canary had each share: "
                        + ", ".join(f"{name} {n}" for name, n in steps))
    t_fault = (run.mark("v2 starts failing") or {}).get("t", 1.0)
    end = rollback["t"] + 0.2 if rollback else t_fault + 0.5
    return Result(
        passed=passed,
        headline=(f"users saw {len(bad)} failed request{'' if len(bad) == 1 else 's'}; "
                  + (f"the canary was rolled back at {rollback['percent']:g}%" if rollback
                     else f"the canary was never rolled back (it reached {reached:g}%)")),
        evidence=evidence,
        metrics={"failed": len(bad), "requests": len(reqs), "canary_requests": len(on_canary),
                 "canary_failed": len(bad_canary), "rolled_back": rollback is not None,
                 "rollback_t": rollback["t"] if rollback else None,
                 "rollback_percent": rollback["percent"] if rollback else None,
                 "max_percent": reached, "errors_by_step": dict(steps),
                 "actions": len(actions)},
        chart=count_chart(run, "Requests per second: stable, canary and failed",
                          {"stable (b1-b3)": lambda e: e.get("backend") not in (None, CANARY),
                           f"canary ({CANARY})": lambda e: e.get("backend") == CANARY,
                           "failed": failed}, bucket=0.25,
                          marker_kinds=["canary", "fault"]),
        diagrams=drop_none([moment_diagram(
            run, "The canary fails: before the rule decides", t_fault, end, [CANARY],
            failures=[e for e in bad_canary if t_fault <= e["t"] <= end])]))
