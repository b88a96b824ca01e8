"""SNI mismatch: HTTPS requests that failed, per site; the handshakes the proxy saw."""
from labs.framework.grading import Result, bar_chart, drop_none, request_diagram, verdict
from labs.diagrams import escape
from labs.framework.recording import count_by


def handshake_diagram(event, client_error=None):
    """From the proxy's event of the failed handshake, or from what the client reported."""
    if not event and not client_error:
        return None
    event = event or {"listener": "web", "error": client_error["error"],
                      "tls": {"sni": client_error["name"].split("https://")[-1].rstrip("/"),
                              "matched": False}}
    tls = event.get("tls") or {}
    asked = escape(tls.get("sni") or "?", 60)  # client-controlled: Mermaid-inert
    got = escape(tls.get("certificate") or "the default certificate", 60)
    lines = ["sequenceDiagram",
             f"  participant C as client (wants {asked})",
             f"  participant P as proxy · listener {escape(event.get('listener', '?'), 40)} (TLS terminate)",
             f"  C->>P: ClientHello, server name (SNI) = {asked}",
             f"  Note over P: certificates for this name: {'yes' if tls.get('matched') else 'none'}"
             f" → serves {got}",
             f"  P->>C: ServerHello + certificate for {got}",
             f"  Note over C: {asked} is not a name in the certificate: refuse it",
             "  C--xP: alert, connection closed",
             f"  Note over C,P: {escape(event.get('error') or '', 100)}"]
    return {"title": f"A failed handshake for {asked}", "mermaid": "\n".join(lines)}


def grade(run):
    limit = float(run.targets.get("max_failed_share", 0.01))
    total = int(run.stats.get("requests") or 0)
    failed = int(run.stats.get("failures") or 0)
    share = failed / total if total else 1.0
    sites = {e["name"].split("https://")[-1].rstrip("/"): (e["failures"], e["requests"])
             for e in run.stats.get("endpoints") or []}
    handshakes = [e for e in run.of_type("connection") if e.get("kind") == "tls"]
    by_name = count_by(handshakes, lambda e: ((e.get("tls") or {}).get("sni"),
                                             (e.get("tls") or {}).get("certificate")))
    served = [e for e in run.requests() if (e.get("tls") or {}).get("sni")]
    checks = [(total > 0 and share <= limit,
               f"{failed} of {total} HTTPS requests failed ({share:.0%}; target at most "
               f"{limit:.0%}): " + ", ".join(f"{site}: {f} of {n}" for site, (f, n)
                                             in sites.items()))]
    passed, evidence = verdict(checks)
    for (sni, cert), n in by_name.items():
        evidence.append(f"INFO  {n} handshakes asked for {sni} and got the certificate "
                        f"{cert}: the client refused it")
    for err in (run.stats.get("errors") or [])[:3]:
        evidence.append(f"INFO  the clients said, {err['occurrences']} times for "
                        f"{err['name']}: {err['error'][:160]}")
    names = count_by(served, lambda e: (e["tls"].get("sni"), e["tls"].get("certificate")))
    for (sni, cert), n in names.items():
        evidence.append(f"INFO  {n} requests for {sni} were served with the certificate {cert}")
    example = next((e for e in served if e["tls"].get("sni") == "shop.lab.test"), None)
    labels = list(sites)
    return Result(
        passed=passed,
        headline=f"{share:.0%} of the HTTPS requests failed",
        evidence=evidence,
        metrics={"requests": total, "failed": failed, "per_site": sites,
                 "failed_handshakes": len(handshakes)},
        chart=bar_chart("Failed requests per site", labels, [sites[s][0] for s in labels],
                        "failed requests", run,
                        highlight=max(labels, key=lambda s: sites[s][0]) if labels else None),
        diagrams=drop_none([handshake_diagram(handshakes[0] if handshakes else None,
                                              next(iter(run.stats.get("errors") or []), None)),
                            request_diagram(example, "shop.lab.test with its own certificate")]))
