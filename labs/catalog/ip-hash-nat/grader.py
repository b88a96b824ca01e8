"""IP hash behind a NAT: the busiest backend's share; users moved when b4 joined."""
from urllib.parse import parse_qs, urlsplit

from labs.framework.grading import Result, backend_chart, drop_none, request_diagram, verdict
from labs.framework.recording import count_by


def user_of(event):
    return (parse_qs(urlsplit(event.get("path", "")).query).get("user") or [None])[0]


def grade(run):
    max_share = float(run.targets.get("max_share", 0.5))
    max_moved = float(run.targets.get("max_moved", 0.4))
    joined = run.mark("scale out, b4 joins")
    t_join = joined["t"] if joined else 3.5
    before = [e for e in run.requests(start=0.3, end=t_join) if e.get("backend")]
    per = count_by(before, lambda e: e["backend"])
    hot = max(per, key=per.get) if per else "?"
    share = per.get(hot, 0) / len(before) if before else 0
    nat = [e for e in before if str(e.get("client", "")).startswith("127.0.0.2:")]
    nat_backends = count_by(nat, lambda e: e["backend"])
    last_before, first_after = {}, {}
    for e in sorted(before, key=lambda e: e["t"]):
        last_before[user_of(e)] = e["backend"]
    for e in sorted(run.requests(start=t_join + 0.1), key=lambda e: e["t"]):
        u = user_of(e)
        if e.get("backend") and u not in first_after:
            first_after[u] = e["backend"]
    users = [u for u in last_before if u in first_after and u]
    moved = [u for u in users if last_before[u] != first_after[u]]
    moved_share = len(moved) / len(users) if users else 1.0
    to_b4 = sum(1 for u in moved if first_after[u] == "b4")
    checks = [
        (share <= max_share,
         f"before b4 joined, {hot} served {share:.0%} of the requests (target at most "
         f"{max_share:.0%}; an even split is 33%); the {len(nat)} requests from the office NAT "
         f"address went to {', '.join(f'{b}: {n}' for b, n in sorted(nat_backends.items()))}"),
        (moved_share <= max_moved,
         f"when b4 joined, {len(moved)} of {len(users)} users ({moved_share:.0%}) moved to "
         f"another backend, {to_b4} of them to b4 (target at most {max_moved:.0%}; a ring "
         "moves about 25%)"),
    ]
    passed, evidence = verdict(checks)
    algo = run.config.get("pools", {}).get("web", {}).get("balancer", {}).get("algorithm")
    example = next((e for e in run.requests(start=t_join + 0.1)
                    if user_of(e) in moved and e.get("backend") != "b4"), None)
    return Result(
        passed=passed,
        headline=(f"{algo}: busiest backend {share:.0%} of the load; {moved_share:.0%} of the "
                  "users moved when b4 joined"),
        evidence=evidence,
        metrics={"hot_backend": hot, "hot_share": round(share, 3),
                 "per_backend_before": per, "users": len(users), "moved": len(moved),
                 "moved_share": round(moved_share, 3), "moved_to_b4": to_b4,
                 "nat_requests_by_backend": nat_backends},
        chart=backend_chart(run, ["b1", "b2", "b3", "b4"], bucket=0.5, failures=False),
        diagrams=drop_none([request_diagram(
            example, "A user moved between two old backends: the key did not change, "
                     "the modulo did")]))
