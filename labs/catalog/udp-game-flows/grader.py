"""UDP game flows: players whose datagrams reached a second server, the idle timer, and
the drain of a game server (its flows end by idle expiry, or are cut at the deadline)."""
from labs.framework.grading import Result, chart, drop_none, verdict
from labs.diagrams import escape
from labs.framework.recording import count_by
from proxy.durations import parse_duration


def moves_by_player(run) -> dict[str, list[str]]:
    """client (ip:port) -> the servers its flows went to, in order (the proxy's own
    connection_open events, kind udp)."""
    out: dict[str, list[str]] = {}
    for e in sorted(run.of_type("connection_open"), key=lambda e: e["t"]):
        if e.get("kind") == "udp" and e.get("backend"):
            out.setdefault(e.get("client") or "?", []).append(e["backend"])
    return out


def changes(servers: list[str]) -> int:
    return sum(1 for a, b in zip(servers, servers[1:]) if a != b)


def drain_of(run) -> tuple[str, float] | None:
    """(backend, lab second) of the first drain the proxy started, None if none."""
    for e in sorted(run.of_type("drain"), key=lambda e: e["t"]):
        if e.get("what") == "started" and e.get("backend"):
            return e["backend"], e["t"]
    return None


def drained_flows(run, backend: str, at: float) -> dict[str, int]:
    """How the flows on ``backend`` that were open when its drain started ended:
    idle (their player left or went quiet), cut (the drain's deadline), other, or still
    open when the run ended (a match still being played)."""
    opened = {e.get("connection_id"): e["t"] for e in run.of_type("connection_open")
              if e.get("kind") == "udp" and e.get("backend") == backend and e["t"] <= at}
    out = {"at_drain": 0, "idle": 0, "cut": 0, "other": 0, "open_at_end": 0}
    ended = {e.get("connection_id"): e for e in run.of_type("connection")
             if e.get("kind") == "udp" and e.get("backend") == backend}
    for cid in opened:
        e = ended.get(cid)
        if e is not None and e["t"] < at:
            continue  # it ended before the drain began
        out["at_drain"] += 1
        if e is None:
            out["open_at_end"] += 1
        elif drain_cut(e):
            out["cut"] += 1
        elif e.get("closed_by") == "idle":
            out["idle"] += 1
        else:
            out["other"] += 1
    return out


def drain_cut(event: dict) -> bool:
    return event.get("closed_by") == "proxy" and "drain" in (event.get("error") or "")


def flow_diagram(client: str, servers: list[str], idle_s: float, gap_s: float,
                 sc) -> dict | None:
    if len(servers) < 2:
        return None
    lines = ["sequenceDiagram", f"  participant C as player {escape(client, 48)}",
             "  participant P as proxy · udp listener"]
    for s in dict.fromkeys(servers):
        lines.append(f"  participant {escape(s, 20)}")
    first = escape(servers[0], 20)
    lines += [f"  C->>P: first datagram: a new flow", f"  P->>{first}: round robin picks "
              f"{first}", f"  {first}-->>C: game replies"]
    for prev, cur in zip(servers, servers[1:]):
        cur_e = escape(cur, 20)
        lines += [f"  Note over C,P: quiet {sc.short(gap_s)}; the flow ends after "
                  f"{sc.short(idle_s)} idle",
                  "  C->>P: heartbeat: no flow any more, a new one",
                  f"  P->>{cur_e}: round robin picks {cur_e}"
                  + (" (the match is on " + escape(prev, 20) + ")" if cur != prev else "")]
        if len(lines) > 40:
            break
    return {"title": "One player's flows: each quiet spell starts over", "mermaid":
            "\n".join(lines)}


def grade(run):
    sc = run.scale
    max_moves = int(run.targets.get("max_moves", 0))
    max_lost = float(run.targets.get("max_lost_share", 0.01))
    cap = float(run.targets.get("max_flow_idle_s", 6))
    gap = 1.5
    listener = (run.config.get("listeners") or {}).get("game") or {}
    idle = parse_duration((listener.get("udp") or {}).get("flow_idle", "30s"))
    players = moves_by_player(run)
    moved = {c: s for c, s in players.items() if changes(s)}
    n_moves = sum(changes(s) for s in moved.values())
    errors = run.stats.get("errors") or []
    lost = sum(e["occurrences"] for e in errors if "no reply" in (e.get("error") or ""))
    seen_moves = sum(e["occurrences"] for e in errors if "moved" in (e.get("error") or ""))
    total = int(run.stats.get("requests") or 0)
    ended = [e for e in run.of_type("connection") if e.get("kind") == "udp"]
    closed = count_by(ended, lambda e: e.get("closed_by") or "?")
    checks = [
        (players and n_moves <= max_moves,
         f"{len(moved)} of {len(players)} players had their session moved to another server "
         f"({n_moves} moves; the players saw {seen_moves}); target at most {max_moves}"),
        (total > 0 and lost <= max_lost * total,
         f"{lost} of {total} datagrams got no reply (at most {max_lost:.0%} may)"),
        (idle <= cap, f"flow_idle is {sc.both(idle)}; the quiet gap between heartbeats is "
                      f"{sc.short(gap)}, and flow_idle may be at most {sc.short(cap)}"),
    ]
    max_cuts = int(run.targets.get("max_drain_cuts", 0))
    delay_cap = float(run.targets.get("max_deregistration_delay_s", 360))
    pool = (run.config.get("pools") or {}).get("game") or {}
    delay = parse_duration(pool.get("deregistration_delay", "30s"))
    drain = drain_of(run)
    cuts = [e for e in ended if drain_cut(e)]
    if drain is None:
        checks.append((False, "no drain was recorded: the lab drains b2 at lab second 2 "
                              "(run the lab, not only its traffic)"))
    else:
        checks.append((len(cuts) <= max_cuts,
                       f"{len(cuts)} game flows were cut by {drain[0]}'s drain deadline (the "
                       f"deregistration delay, {sc.both(delay)}) while their players were "
                       f"still in a match; target at most {max_cuts}"))
    checks.append((delay <= delay_cap,
                   f"deregistration_delay is {sc.both(delay)}; it may be at most "
                   f"{sc.both(delay_cap)} (the longest match: a drain ends sooner once the "
                   "last player on the server has left)"))
    passed, evidence = verdict(checks)
    if drain is not None:
        d = drained_flows(run, *drain)
        evidence.append(
            f"INFO  {d['at_drain']} flows were on {drain[0]} when its drain began at "
            f"{sc.short(drain[1])}: {d['idle']} ended idle (the only end a UDP flow has "
            f"without a drain: flow_idle after its player's last datagram), {d['cut']} cut "
            f"at the deadline, {d['other']} otherwise, {d['open_at_end']} still playing "
            "when the run ended")
    flows = sum(len(s) for s in players.values())
    evidence.append(f"INFO  the proxy opened {flows} flows for {len(players)} players; of "
                    f"those that ended during the run: "
                    + (", ".join(f"{n} closed by {k}" for k, n in sorted(closed.items()))
                       or "none"))
    example = max(moved.items(), key=lambda kv: changes(kv[1]), default=None)
    return Result(
        passed=passed,
        headline=f"{len(moved)} of {len(players)} players lost their match to a new flow "
                 f"(flow_idle {sc.short(idle)})",
        evidence=evidence,
        metrics={"players": len(players), "players_moved": len(moved), "moves": n_moves,
                 "moves_seen_by_players": seen_moves, "datagrams": total, "lost": lost,
                 "flows": flows, "flow_idle_s": idle, "closed_by": closed,
                 "drained": drain[0] if drain else None, "drain_cuts": len(cuts),
                 "deregistration_delay_s": delay,
                 "drained_flows": drained_flows(run, *drain) if drain else {}},
        chart=flows_chart(run),
        diagrams=drop_none([flow_diagram(example[0], example[1], idle, gap, sc)
                            if example else None]))


def flows_chart(run) -> dict:
    opens = [e for e in run.of_type("connection_open") if e.get("kind") == "udp"]
    end = max(run.duration, max((e["t"] for e in opens), default=0))
    xs = [round(i * 0.5, 3) for i in range(int(end / 0.5) + 1)]
    new = [0] * len(xs)
    for e in opens:
        i = int(e["t"] / 0.5)
        if 0 <= i < len(xs):
            new[i] += 1
    return chart("New UDP flows per half second (each player needs only one)", xs,
                 [("new flows", new)], "flows", run)
