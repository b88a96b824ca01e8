"""gRPC behind L4: where each channel's calls landed (the clients' count) and why."""
from labs.diagrams import escape
from labs.framework.grading import Result, bar_chart, backend_chart, drop_none, \
    request_diagram, verdict
from labs.framework.recording import count_by

BACKENDS = ("b1", "b2", "b3", "b4")
PREFIX = "Whoami ← "


def calls_per_backend(stats: dict) -> dict[str, int]:
    """The clients' own count: each call is named after the backend that answered it."""
    out = {b: 0 for b in BACKENDS}
    for row in stats.get("endpoints") or []:
        name = row.get("name") or ""
        if name.startswith(PREFIX):
            out[name[len(PREFIX):]] = out.get(name[len(PREFIX):], 0) + int(row["requests"])
    return out


def channel_diagram(conn: dict | None, calls: int) -> dict | None:
    if not conn:
        return None
    b = escape(conn.get("backend") or "?", 40)
    text = "\n".join([
        "sequenceDiagram",
        f"  participant C as client pod {escape(conn.get('client', '?'), 48)}",
        f"  participant P as proxy · tcp listener {escape(conn.get('listener', '?'), 40)}",
        f"  participant B as {b}",
        "  C->>P: TCP connect (the gRPC channel)",
        f"  Note over P: layer 4: one choice per connection; "
        f"{escape(conn.get('algorithm'), 40)} picks {b}",
        f"  P->>B: connect, then relay bytes both ways",
        "  C->>B: HTTP/2 stream 1: Whoami",
        f"  B-->>C: answered by {b}",
        "  C->>B: stream 3, 5, 7 ... every later call, same connection",
        f"  B-->>C: all answered by {b}",
        f"  Note over C,B: {int(conn.get('bytes_in') or 0)} bytes in, "
        f"{int(conn.get('bytes_out') or 0)} bytes out; the clients counted {calls} calls "
        "in all, on 2 connections",
    ])
    return {"title": "One channel through an L4 balancer: one choice for every call",
            "mermaid": text}


def grade(run):
    min_share = float(run.targets.get("min_share", 0.15))
    max_failed = float(run.targets.get("max_failed_share", 0.01))
    per = calls_per_backend(run.stats)
    answered = sum(per.values())
    total = int(run.stats.get("requests") or 0)
    failures = int(run.stats.get("failures") or 0)
    shares = {b: (n / answered if answered else 0.0) for b, n in per.items()}
    idle = [b for b in BACKENDS if per.get(b, 0) == 0]
    low = min(BACKENDS, key=lambda b: shares[b])
    checks = [
        (answered > 0 and shares[low] >= min_share,
         f"calls answered per server: " + ", ".join(f"{b} {per[b]} ({shares[b]:.0%})"
                                                     for b in BACKENDS)
         + f"; the least used, {low}, got {shares[low]:.0%} (target at least {min_share:.0%})"),
        (total > 0 and failures <= max_failed * total,
         f"{failures} of {total} calls failed (at most {max_failed:.0%} may)"),
    ]
    passed, evidence = verdict(checks)
    conns = [e for e in run.of_type("connection") if e["t"] >= -1 and e.get("kind") == "tcp"]
    opens = [e for e in run.of_type("connection_open") if e["t"] >= -1]
    reqs = [e for e in run.requests() if e.get("backend")]
    if reqs:
        evidence.append("INFO  layer 7: the proxy balanced " f"{len(reqs)} calls (streams) "
                        "one by one: " + ", ".join(
                            f"{b} {n}" for b, n in sorted(count_by(reqs, lambda e: e[
                                "backend"]).items())))
    elif conns or opens:
        picked = count_by(conns or opens, lambda e: e.get("backend") or "none")
        evidence.append(f"INFO  layer 4: the proxy balanced {len(conns or opens)} connections "
                        f"in the whole run ({', '.join(f'{b}: {n}' for b, n in sorted(picked.items()))}) "
                        "and never saw a call")
    chart = bar_chart("gRPC calls answered per server (the clients' count)", list(BACKENDS),
                      [per[b] for b in BACKENDS], "calls", run,
                      highlight=idle[0] if idle else None)
    example = next((e for e in reqs), None)
    return Result(
        passed=passed,
        headline=(f"{len(idle)} of 4 servers answered no call" if idle else
                  f"the least used server answered {shares[low]:.0%} of the calls"),
        evidence=evidence,
        metrics={"calls": total, "failed": failures, "per_backend": per,
                 "shares": {b: round(s, 3) for b, s in shares.items()}, "idle": idle,
                 "connections": len(conns or opens), "proxy_requests": len(reqs)},
        chart=chart,
        diagrams=drop_none([
            channel_diagram((conns or opens)[0] if (conns or opens) else None, total)
            if not reqs else None,
            request_diagram(example, "Layer 7: one call, balanced on its own")]))
