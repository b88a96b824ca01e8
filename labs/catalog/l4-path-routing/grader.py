"""Path routing at L4: requests answered by the wrong kind of server (locust's checks)."""
from labs.framework.grading import Result, backend_chart, bar_chart, drop_none, \
    request_diagram, verdict
from labs.diagrams import escape
from labs.framework.recording import count_by

API, STATIC = {"b1", "b2"}, {"b3", "b4"}


def connection_diagram(event):
    if not event:
        return None
    b = escape(event.get("backend") or "?", 40)  # event text: Mermaid-inert
    kind = "an API server" if b in API else "a static server"
    text = "\n".join([
        "sequenceDiagram",
        f"  participant C as client {escape(event.get('client', '?'), 48)}",
        f"  participant P as proxy · tcp listener {escape(event.get('listener', '?'), 40)}",
        f"  participant B as {b} ({kind})",
        "  C->>P: TCP connect",
        f"  Note over P: layer 4: no request yet, only a connection. Pool "
        f"{escape(event.get('pool'), 40)}, {escape(event.get('algorithm'), 40)} picks {b}",
        f"  P->>B: connect, then relay every byte both ways",
        "  C->>B: GET /api/orders (inside the bytes: the proxy cannot read it)",
        f"  B-->>C: answered by {b}",
        "  C->>B: GET /static/app.js (same connection, same server)",
        f"  B-->>C: answered by {b}: one of the two went to the wrong kind of server",
        f"  Note over C,B: {int(event.get('bytes_in') or 0)} bytes in, "
        f"{int(event.get('bytes_out') or 0)} bytes out over {event.get('duration_ms', 0):.0f} ms",
    ])
    return {"title": "One L4 connection: the choice is made before the first request",
            "mermaid": text}


def grade(run):
    limit = float(run.targets.get("max_misrouted_share", 0.01))
    total = int(run.stats.get("requests") or 0)
    misrouted = int(run.stats.get("failures") or 0)
    share = misrouted / total if total else 1.0
    per_endpoint = {e["name"]: (e["failures"], e["requests"])
                    for e in run.stats.get("endpoints") or []}
    conns = [e for e in run.of_type("connection") if e.get("backend") and e["t"] >= 0]
    reqs = [e for e in run.requests() if e.get("backend")]
    checks = [(total > 0 and share <= limit,
               f"{misrouted} of {total} requests ({share:.0%}) were answered by the wrong kind of "
               f"server (target at most {limit:.0%}): "
               + ", ".join(f"{name}: {f} of {n}" for name, (f, n) in per_endpoint.items()))]
    passed, evidence = verdict(checks)
    if conns:
        per = count_by(conns, lambda e: e["backend"])
        evidence.append(f"INFO  layer 4: the proxy balanced {len(conns)} connections "
                        f"({', '.join(f'{b}: {n}' for b, n in sorted(per.items()))}) and saw no "
                        "request, no path")
    if reqs:
        routed = count_by(reqs, lambda e: (e.get("route"), e.get("pool")))
        evidence.append("INFO  layer 7: " + ", ".join(
            f"route {r} → pool {p}: {n} requests" for (r, p), n in routed.items()))
    chart = (backend_chart(run, ["b1", "b2", "b3", "b4"], failures=False, bucket=0.5)
             if reqs else bar_chart("Connections per backend (L4 balances connections)",
                                    ["b1", "b2", "b3", "b4"],
                                    [count_by(conns, lambda e: e["backend"]).get(b, 0)
                                     for b in ("b1", "b2", "b3", "b4")], "connections", run))
    example = next((e for e in reqs if e.get("path", "").startswith("/api")), None)
    return Result(
        passed=passed,
        headline=f"{share:.0%} of the requests reached the wrong kind of server",
        evidence=evidence,
        metrics={"requests": total, "misrouted": misrouted, "misrouted_share": round(share, 4),
                 "connections": len(conns), "per_endpoint": per_endpoint},
        chart=chart,
        diagrams=drop_none([connection_diagram(conns[0] if conns else None),
                            request_diagram(example, "Layer 7: the route reads the path")]))
