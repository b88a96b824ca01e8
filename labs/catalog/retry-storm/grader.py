"""Retry storm: attempts on the servers per user request (the amplification), split by
layer, and how many user requests succeeded in the end.

Every attempt of a user request carries ``req=ID&try=N`` in its query (traffic.py), so the
proxy's events alone tell the layers apart: each event is one client attempt, and its
``retries`` list the proxy's extra attempts on the servers.
"""
from urllib.parse import parse_qs, urlsplit

from labs.framework.grading import Result, chart, drop_none, request_diagram, verdict
from labs.framework.recording import started_at


def attempt_of(e: dict) -> tuple[str, int] | None:
    """(user request id, client attempt number) from the path's query, or None."""
    q = parse_qs(urlsplit(e.get("path") or "").query)
    try:
        return q["req"][0], int(q["try"][0])
    except (KeyError, IndexError, ValueError):
        return None


def server_attempts(e: dict) -> int:
    """Attempts on the servers this proxy request made: the last one plus its retries."""
    return len(e.get("retries") or []) + (1 if e.get("backend") else 0)


def ok(e: dict) -> bool:
    return 0 < int(e.get("status") or 0) < 400


def user_requests(events: list[dict]) -> dict[str, list[dict]]:
    """Each user request's client attempts, in attempt order."""
    out: dict[str, list[dict]] = {}
    for e in events:
        key = attempt_of(e)
        if key is not None:
            out.setdefault(key[0], []).append(e)
    for attempts in out.values():
        attempts.sort(key=lambda e: attempt_of(e)[1])
    return out


def layers(users: dict[str, list[dict]]) -> dict:
    """The numbers of the run: user requests, client attempts, server attempts, success."""
    n_users = len(users)
    client = sum(len(a) for a in users.values())
    server = sum(server_attempts(e) for a in users.values() for e in a)
    succeeded = sum(1 for a in users.values() if ok(a[-1]))
    return {"user_requests": n_users, "client_attempts": client, "server_attempts": server,
            "succeeded": succeeded,
            "success": succeeded / n_users if n_users else 0.0,
            "amplification": server / n_users if n_users else 0.0,
            "client_factor": client / n_users if n_users else 0.0,
            "proxy_factor": server / client if client else 0.0}


def attempts_chart(run, users: dict[str, list[dict]], bucket: float = 0.5) -> dict:
    """Per half second: user requests begun, and attempts on the servers."""
    end = run.end
    n = max(1, int(end / bucket + 0.999))
    xs = [round(i * bucket, 3) for i in range(n)]
    firsts, attempts, failed_users = [0.0] * n, [0.0] * n, [0.0] * n
    for tries in users.values():
        i = int(started_at(tries[0]) / bucket)
        if 0 <= i < n:
            firsts[i] += 1 / bucket
            if not ok(tries[-1]):
                failed_users[i] += 1 / bucket
        for e in tries:
            j = int(started_at(e) / bucket)
            if 0 <= j < n:
                attempts[j] += server_attempts(e) / bucket
    return chart("User requests and the attempts they cost, per second", xs,
                 [("user requests", firsts), ("attempts on the servers", attempts),
                  ("user requests that failed in the end", failed_users)],
                 "per second", run, ["fault"])


def begun_between(users: dict[str, list[dict]], start: float, end: float) -> dict:
    """The user requests whose first attempt started in [start, end) lab seconds."""
    return {u: a for u, a in users.items() if start <= started_at(a[0]) < end}


def grade(run):
    max_amp = float(run.targets.get("max_amplification", 1.5))
    min_success = float(run.targets.get("min_success", 0.9))
    start, end = float(run.targets.get("from_s", 2)), float(run.targets.get("to_s", 5))
    reqs = run.requests()
    users = user_requests(reqs)
    n = layers(begun_between(users, start, end))
    whole = layers(users)
    span = f"begun during the slowdown (lab seconds {start:g} to {end:g})"
    checks = [
        (n["user_requests"] > 0 and n["amplification"] <= max_amp,
         f"{n['server_attempts']} attempts on the servers for the {n['user_requests']} user "
         f"requests {span}: an amplification of {n['amplification']:.2f} (target at most "
         f"{max_amp:g}) = {n['client_factor']:.2f} client attempts per user request x "
         f"{n['proxy_factor']:.2f} server attempts per client attempt (the proxy's retries)"),
        (n["user_requests"] > 0 and n["success"] >= min_success,
         f"{n['succeeded']} of those {n['user_requests']} user requests succeeded in the end "
         f"({n['success']:.1%}; target at least {min_success:.0%})"),
    ]
    passed, evidence = verdict(checks)
    evidence.append(f"INFO  the whole run: {whole['user_requests']} user requests, "
                    f"amplification {whole['amplification']:.2f}, {whole['success']:.1%} "
                    "succeeded in the end")
    statuses: dict[str, int] = {}
    for e in reqs:
        key = str(e.get("status") or 0)
        statuses[key] = statuses.get(key, 0) + 1
    evidence.append("INFO  the clients' attempts by status: " + ", ".join(
        f"{s} {c}" for s, c in sorted(statuses.items())))
    asked = [e["retry_budget"] for e in reqs if e.get("retry_budget")]
    if asked:
        skipped = sum(1 for b in asked if not b.get("allowed"))
        example = next((b for b in asked if not b.get("allowed")), asked[0])
        evidence.append(f"INFO  the retry budget was asked {len(asked)} times and refused "
                        f"{skipped}: {example.get('reason')}")
    shed = [e for e in reqs if int(e.get("status") or 0) == 429]
    if shed:
        evidence.append(f"INFO  {len(shed)} attempts were shed with 429 Too Many Requests "
                        "(each tells the client when to come back: Retry-After)")
    worst = max(users.values(), key=lambda a: sum(server_attempts(e) for e in a),
                default=None)
    if worst:
        evidence.append(f"INFO  the costliest user request ({attempt_of(worst[0])[0]}) made "
                        f"{len(worst)} client attempts and {sum(server_attempts(e) for e in worst)} "
                        "attempts on the servers")
    example = next((e for e in reqs if e.get("retries")), None)
    return Result(
        passed=passed,
        headline=(f"during the slowdown: {n['amplification']:.2f} attempts on the servers per "
                  f"user request; {n['success']:.0%} of the user requests succeeded"),
        evidence=evidence,
        metrics={**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in n.items()},
                 "whole_run": {k: (round(v, 4) if isinstance(v, float) else v)
                               for k, v in whole.items()},
                 "statuses": statuses, "retry_budget_refused": sum(
                     1 for b in asked if not b.get("allowed")), "shed_429": len(shed),
                 "target_max_amplification": max_amp, "target_min_success": min_success},
        chart=attempts_chart(run, users),
        diagrams=drop_none([request_diagram(example, "One client attempt and the proxy's "
                                                     "retries behind it")]))
