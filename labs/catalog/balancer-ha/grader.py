"""Balancer HA: the floating address's failover gap and the DNS clients' stale window,
measured from what the clients saw (a refused connection reaches no balancer)."""
from labs.diagrams import escape
from labs.framework.grading import Result, chart, verdict, _buckets


def client_calls(run, via: str) -> list[dict]:
    return sorted((e for e in run.of_type("client") if e.get("via") == via),
                  key=lambda e: e["t"])


def failover_gap(calls: list[dict], t_kill: float) -> tuple[float | None, list[dict]]:
    """Seconds from the death to the first call started after it that was answered, and
    the calls lost from the death on (None: never answered again)."""
    after = [c for c in calls if c["t"] >= t_kill - 0.05]
    lost = [c for c in after if not c.get("ok")]
    back = next((c for c in after if c.get("ok") and c["t"] >= t_kill), None)
    return (None if back is None else round(back["t"] - t_kill, 3)), lost


def stale_window(calls: list[dict], t_kill: float) -> tuple[float, list[dict]]:
    """Seconds from the death to the last failed call, and the failed calls."""
    lost = [c for c in calls if not c.get("ok") and c["t"] >= t_kill - 0.05]
    return (round(max(c["t"] for c in lost) - t_kill, 3) if lost else 0.0), lost


def client_chart(run, bucket: float = 0.25) -> dict:
    xs = _buckets(run, bucket)
    series = {"floating address: answered": lambda c: c.get("via") == "vip" and c.get("ok"),
              "floating address: failed": lambda c: c.get("via") == "vip" and not c.get("ok"),
              "DNS clients: answered": lambda c: c.get("via") == "dns" and c.get("ok"),
              "DNS clients: failed": lambda c: c.get("via") == "dns" and not c.get("ok")}
    values = {k: [0.0] * len(xs) for k in series}
    for c in run.of_type("client"):
        i = int((c["t"] - xs[0]) / bucket)
        if 0 <= i < len(xs):
            for k, pred in series.items():
                if pred(c):
                    values[k][i] += 1.0 / bucket
    return chart("What the clients saw: requests per second", xs,
                 [(k, values[k]) for k in series], "requests per second", run,
                 ["fault", "ha", "dns"])


def failover_diagram(run, t_kill: float, gap: float | None, vip_lost: int, stale: float,
                     dns_lost: int) -> dict:
    """The failover as a sequence: lb1 dies, lb2's heartbeats go unanswered, lb2 takes
    the address; the zone drops lb1 while cached answers still name it. Times are lab
    seconds with production time beside them; every line comes from the recording."""
    sc = run.scale
    lines = ["sequenceDiagram", "    participant O as Office clients",
             "    participant A as App clients (DNS)", "    participant V as vip",
             "    participant L1 as lb1", "    participant L2 as lb2",
             "    participant Z as DNS zone",
             f"    Note over L1: {escape(sc.short(t_kill))} lb1 dies (SIGKILL)"]
    moments = sorted((m for m in run.timeline if m.get("kind") in ("ha", "dns")
                      and m["t"] >= t_kill - 0.01), key=lambda m: m["t"])
    for m in moments[:6]:
        who = "Z" if m.get("kind") == "dns" else "L2"
        lines.append(f"    Note over {who}: {escape(sc.short(m['t']) + ' ' + m['what'], 160)}")
        if m.get("new") == "master":
            lines.append("    L2->>V: bind the floating address")
    lines.append(f"    O-xV: {vip_lost} requests refused while no balancer held it")
    if gap is not None:
        lines.append(f"    O->>V: answered again {escape(sc.both(gap))} "
                     "after the death")
    lines.append(f"    A-xL1: {dns_lost} requests to lb1's cached address")
    lines.append(f"    Note over A: the last one {escape(sc.both(stale))} after the death: "
                 "the TTL ran out")
    return {"title": "The failover, from the recording", "mermaid": "\n".join(lines)}


def grade(run):
    sc = run.scale
    max_gap = float(run.targets.get("max_vip_gap_s", 0.6))
    max_stale = float(run.targets.get("max_dns_stale_s", 1.2))
    max_qps = float(run.targets.get("max_queries_per_client_s", 4))
    kill = run.mark("lb1 dies")
    t_kill = kill["t"] if kill else 1.0
    vip, dns = client_calls(run, "vip"), client_calls(run, "dns")
    gap, vip_lost = failover_gap(vip, t_kill)
    stale, dns_lost = stale_window(dns, t_kill)
    queries = client_calls(run, "dns-query")
    clients = max(1, len({q.get("client") for q in queries}))
    qps = len(queries) / clients / max(run.duration, 0.001)
    on_lb1 = [c for c in dns_lost if c.get("node") == "lb1"]
    checks = [
        (gap is not None and gap <= max_gap,
         f"floating address: answered again {sc.both(gap) if gap is not None else 'never'} "
         f"after lb1 died (target at most {sc.both(max_gap)}); {len(vip_lost)} office "
         f"requests were lost"),
        (stale <= max_stale,
         f"DNS clients: the last failure came {sc.both(stale)} after lb1 died (target at "
         f"most {sc.both(max_stale)}); {len(dns_lost)} app requests were lost, "
         f"{len(on_lb1)} of them sent to lb1's cached address"),
        (qps <= max_qps,
         f"DNS clients queried the zone {qps:.1f} times per lab second each ({len(queries)} "
         f"queries; at most {max_qps:g} allowed)"),
    ]
    passed, evidence = verdict(checks)
    for m in sorted(run.marks(kind="ha") + run.marks(kind="dns"), key=lambda m: m["t"]):
        if m.get("new") == "master" or m.get("serving") is not None or m.get("bound"):
            evidence.append(f"INFO  {sc.short(m['t'])}: {m['what']}")
    if not vip and not dns:
        evidence.append("INFO  no client log was recorded")
    return Result(
        passed=passed,
        headline=(f"floating address back after "
                  f"{sc.both(gap) if gap is not None else 'never'}; DNS clients failing for "
                  f"{sc.both(stale)} after lb1 died"),
        evidence=evidence,
        metrics={"vip_gap_s": gap, "vip_lost": len(vip_lost), "dns_stale_s": stale,
                 "dns_lost": len(dns_lost), "dns_lost_on_lb1": len(on_lb1),
                 "vip_calls": len(vip), "dns_calls": len(dns), "dns_queries": len(queries),
                 "queries_per_client_s": round(qps, 2), "t_kill": t_kill},
        chart=client_chart(run),
        diagrams=[failover_diagram(run, t_kill, gap, len(vip_lost), stale, len(dns_lost))])
