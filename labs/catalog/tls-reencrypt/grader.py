"""TLS re-encryption: who answered the customers (the impostor on b4's address?), whether
every backend connection was TLS, and whether the proxy checked the servers' certificates.

All from the proxy's request events: ``backend`` (who answered), ``backend_tls`` (the TLS
the proxy spoke to it: version, server name, verified) and ``retries`` (a refused
handshake, tried again on another server), and from what the customers saw (locust).
"""
from labs.diagrams import escape
from labs.framework.grading import Result, bar_chart, drop_none, verdict
from labs.framework.recording import count_by

IMPOSTOR = "b4"


def answered_by(event: dict) -> str | None:
    """The server whose answer the customer got (None: the proxy answered itself)."""
    if event.get("proxy_error") or not event.get("status"):
        return None
    return event.get("backend")


def refused_handshakes(events: list[dict]) -> list[dict]:
    """Backend connections the proxy gave up at the TLS handshake (the request was not sent
    there): each request's retries, and the requests that ended on one."""
    out = []
    for e in events:
        for r in e.get("retries") or []:
            if "tls" in (r.get("error") or "").lower() or "certificate" in (r.get("error") or ""):
                out.append({"backend": r.get("backend"), "error": r.get("error")})
        if e.get("proxy_error") == "backend-tls":
            out.append({"backend": e.get("backend"), "error": e.get("error")})
    return out


def impostor_diagram(verified: bool, refused: list[dict]) -> dict:
    lines = ["sequenceDiagram", "  participant C as customer (checks www.lab.test)",
             "  participant P as proxy (terminates, then re-encrypts)",
             f"  participant X as impostor on {IMPOSTOR}'s address",
             "  C->>P: TLS for www.lab.test, then GET /checkout + session cookie",
             f"  P->>X: new TLS connection, server name {IMPOSTOR}",
             "  X-->>P: certificate with b4's names, from an issuer the lab CA never signed"]
    if verified:
        why = escape((refused[0]["error"] if refused else "certificate verify failed"), 90)
        lines += [f"  Note over P: verify: the chain does not reach the lab CA ({why})",
                  "  P--xX: handshake aborted: no byte of the request was sent",
                  "  P->>P: retry on another server (the request never reached b4)"]
    else:
        lines += ["  Note over P: verify: false: any certificate will do",
                  "  P->>X: GET /checkout + session cookie (encrypted, to the wrong party)",
                  "  X-->>P: 200", "  P-->>C: 200 (the customer cannot tell)"]
    return {"title": "Re-encryption and the server's certificate", "mermaid": "\n".join(lines)}


def grade(run):
    max_impostor = int(run.targets.get("max_impostor_requests", 0))
    limit = float(run.targets.get("max_failed_share", 0.01))
    events = run.requests()
    total = int(run.stats.get("requests") or 0)
    failed = int(run.stats.get("failures") or 0)
    share = failed / total if total else 1.0
    per_backend = count_by([e for e in events if answered_by(e)], answered_by)
    impostor = per_backend.get(IMPOSTOR, 0)
    reached = [e for e in events if answered_by(e)]
    plain = [e for e in reached if not e.get("backend_tls")]
    unverified = [e for e in reached if e.get("backend_tls")
                  and not e["backend_tls"].get("verified")]
    refused = refused_handshakes(events)
    if not events:
        checks = [(False, "the proxy recorded no HTTP request: with TLS passed through (a tcp "
                          "listener) it sees neither paths nor headers, and cannot check "
                          "anything for the customers; terminate at the listener instead")]
    else:
        checks = [
            (impostor <= max_impostor,
             f"{impostor} customer requests were answered by the impostor on {IMPOSTOR}'s "
             f"address (target at most {max_impostor})"),
            (not plain, f"{len(reached) - len(plain)} of {len(reached)} requests that reached "
                        f"a server went to it over TLS ({len(plain)} in clear text on the "
                        "shared network)"),
            (total > 0 and share <= limit,
             f"{failed} of {total} customer requests failed ({share:.1%}; at most "
             f"{limit:.0%} may)"),
        ]
    passed, evidence = verdict(checks)
    if reached:
        evidence.append(f"INFO  {len(unverified)} of {len(reached)} backend connections' "
                        "certificates were not checked (tls.verify: false)"
                        if unverified else
                        f"INFO  every one of the {len(reached)} requests went to a server "
                        "whose certificate the proxy checked against the lab CA")
    if refused:
        by = count_by(refused, lambda r: r["backend"] or "?")
        evidence.append("INFO  the proxy refused the TLS handshake of "
                        + ", ".join(f"{b} {n} times" for b, n in sorted(by.items()))
                        + f" ({refused[0]['error'] or 'certificate verify failed'}) and sent "
                        "those requests elsewhere")
    labels = sorted(per_backend)
    return Result(
        passed=passed,
        headline=f"{impostor} requests went to the impostor; "
                 f"{len(plain)} crossed the shared network in clear text",
        evidence=evidence,
        metrics={"requests": total, "failed": failed, "per_backend": per_backend,
                 "impostor": impostor, "plain": len(plain), "unverified": len(unverified),
                 "refused_handshakes": len(refused)},
        chart=bar_chart("Customer requests answered, per server", labels,
                        [per_backend[b] for b in labels], "requests", run,
                        highlight=IMPOSTOR if IMPOSTOR in per_backend else None),
        diagrams=drop_none([impostor_diagram(not unverified and bool(reached), refused)]))
