"""Reconnect storm: how the chat users cut by a drain came back, read from the proxy's
tunnel events alone.

A tunnel opens with a ``connection_open`` event (kind websocket: when, which backend) and
ends with the ``request`` event whose request_id is that connection_id (its ``t`` is when
it closed). From those two the grader rebuilds every backend's live tunnels at any
moment, the cut (the first tunnel on the drained backend to close), the burst of new
tunnels after it, when the number of live tunnels was whole again, and the spread
over the pool at the end.
"""
from labs.diagrams import escape
from labs.framework.grading import Result, chart, verdict


def tunnels(run) -> list[dict]:
    """Each WebSocket tunnel: {id, backend, opened, closed (None: still open)}."""
    closes = {e.get("request_id"): e["t"] for e in run.requests()}
    return [{"id": e["connection_id"], "backend": e.get("backend"), "opened": e["t"],
             "closed": closes.get(e["connection_id"])}
            for e in sorted(run.of_type("connection_open"), key=lambda e: e["t"])
            if e.get("kind") == "websocket"]


def live_at(tunnels_: list[dict], t: float, backend: str | None = None) -> int:
    """Tunnels open at lab second ``t`` (on ``backend`` only, when given)."""
    return sum(1 for x in tunnels_ if x["opened"] <= t
               and (x["closed"] is None or x["closed"] > t)
               and (backend is None or x["backend"] == backend))


def cut_at(tunnels_: list[dict], drained: str, before: float) -> float | None:
    """When the drained backend's tunnels were cut: the first of them to close (before
    ``before``, the end of the traffic, when every tunnel closes)."""
    return min((x["closed"] for x in tunnels_ if x["backend"] == drained
                and x["closed"] is not None and x["closed"] < before), default=None)


def peak_burst(times: list[float], window: float) -> tuple[int, float | None]:
    """The most events in any window of ``window`` seconds, and where that window began."""
    times = sorted(times)
    best, where, j = 0, None, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + window:
            j += 1
        if j - i > best:
            best, where = j - i, start
    return best, where


def back_at(tunnels_: list[dict], cut: float, until: float) -> float | None:
    """The first moment after the cut when as many tunnels were live as just before it."""
    wanted = live_at(tunnels_, cut - 1e-6)
    for t in sorted(x["opened"] for x in tunnels_ if cut <= x["opened"] < until):
        if live_at(tunnels_, t) >= wanted:
            return t
    return None


def algorithm_of(config: dict) -> str:
    """The algorithm of the document's (only) pool, as the learner wrote it."""
    pools = [p for p in (config.get("pools") or {}).values() if isinstance(p, dict)]
    balancer = (pools[0].get("balancer") if pools else None) or {}
    return str(balancer.get("algorithm", "round_robin")) if pools else "?"


def refused_handshakes(run, since: float, until: float) -> dict[str, int]:
    """Handshakes begun in [since, until) answered with something other than 101 (a
    server over its four session loads sheds with 503), by status."""
    out: dict[str, int] = {}
    for e in run.requests(since, until):
        status = int(e.get("status") or 0)
        if status != 101:
            out[str(status)] = out.get(str(status), 0) + 1
    return out


def tunnels_chart(run, tunnels_: list[dict], backends: list[str],
                  bucket: float = 0.1) -> dict:
    """Per 100 ms: new tunnels, and each backend's live tunnels."""
    n = max(1, int(run.end / bucket + 0.999))
    xs = [round(i * bucket, 3) for i in range(n)]
    new = [0.0] * n
    for x in tunnels_:
        i = int(x["opened"] / bucket)
        if 0 <= i < n:
            new[i] += 1
    series = [("new tunnels per 100 ms", new)]
    series += [(f"tunnels on {b}", [float(live_at(tunnels_, t, b)) for t in xs])
               for b in backends]
    return chart("New tunnels per 100 ms, and the tunnels each server holds", xs, series,
                 "tunnels", run, ["admin", "fault"])


def comeback_diagram(drained: str, cut_users: int, burst: int, window_s: str,
                     placed: dict[str, int], algorithm: str) -> dict:
    """The cut and where the users went, as a sequence diagram."""
    servers = sorted(placed)
    lines = ["sequenceDiagram", f"  participant C as {cut_users} chat apps",
             "  participant P as proxy", f"  participant {escape(drained, 20)}"]
    lines += [f"  participant {escape(b, 20)}" for b in servers]
    lines += [f"  Note over P,{escape(drained, 20)}: deregistration delay over",
              f"  P--x C: {cut_users} tunnels cut at once",
              f"  C->>P: reconnects (up to {burst} in {escape(window_s, 30)})"]
    lines += [f"  P->>{escape(b, 20)}: {placed[b]} new tunnels ({escape(algorithm, 40)})"
              for b in servers]
    return {"title": "The cut and the comeback", "mermaid": "\n".join(lines)}


def grade(run):
    max_burst = int(run.targets.get("max_burst", 6))
    window = float(run.targets.get("burst_window_s", 0.1))
    max_back = float(run.targets.get("max_back_s", 3))
    max_imbalance = float(run.targets.get("max_imbalance", 1.5))
    pool_after = list(run.targets.get("pool_after", ["b2", "b3", "b4"]))
    drained = str(run.targets.get("drained", "b1"))
    sc = run.scale
    all_tunnels = tunnels(run)
    end = float(run.duration) - 0.25  # before locust stops, which closes every tunnel
    backends = sorted({x["backend"] for x in all_tunnels if x["backend"]} | set(pool_after))
    at_end = {b: live_at(all_tunnels, end, b) for b in backends}
    cut = cut_at(all_tunnels, drained, end)
    metrics = {"tunnels": len(all_tunnels), "at_end": at_end, "cut_at": cut,
               "target_max_burst": max_burst, "target_max_back_s": max_back,
               "target_max_imbalance": max_imbalance}
    held = at_end.get(drained, 0)
    if cut is None:
        checks = [(False, f"{drained}'s tunnels were never cut: it still held {held} at the "
                          "end, so the deploy never finished (the deregistration delay must "
                          "end while the lab runs; chat users never hang up by themselves)")]
        passed, evidence = verdict(checks)
        return Result(passed=False, headline=f"{drained} was never drained", evidence=evidence,
                      metrics=metrics, chart=tunnels_chart(run, all_tunnels, backends))
    cut_users = sum(1 for x in all_tunnels if x["backend"] == drained
                    and x["closed"] is not None and cut <= x["closed"] < end)
    burst, burst_from = peak_burst([x["opened"] for x in all_tunnels
                                    if cut <= x["opened"] < end], window)
    back = back_at(all_tunnels, cut, end)
    back_s = None if back is None else back - cut
    counts = [at_end.get(b, 0) for b in pool_after]
    imbalance = (max(counts) / min(counts)) if counts and min(counts) else float("inf")
    spread = ", ".join(f"{b} {at_end.get(b, 0)}" for b in pool_after)
    metrics.update({"cut_users": cut_users, "peak_burst": burst, "burst_from": burst_from,
                    "back_s": None if back_s is None else round(back_s, 3),
                    "imbalance": None if imbalance == float("inf") else round(imbalance, 3)})
    checks = [
        (burst <= max_burst,
         f"after the cut at {sc.both(cut)} ({cut_users} users on {drained}): at most {burst} "
         f"new tunnels in one {sc.short(window)} (target at most {max_burst})"
         + (f", in the {sc.short(window)} from {sc.both(burst_from)}" if burst_from else "")),
        (back_s is not None and back_s <= max_back,
         (f"every user had a tunnel again {sc.short(back_s)} after the cut (target at most "
          f"{sc.short(max_back)})") if back_s is not None else
         (f"{live_at(all_tunnels, cut - 1e-6) - live_at(all_tunnels, end)} users were still "
          f"without a tunnel at the end (target: all back within {sc.short(max_back)})")),
        (imbalance <= max_imbalance,
         f"at the end the servers held: {spread}; the busiest holds "
         + (f"{imbalance:.2f}x" if imbalance != float("inf") else "tunnels while another "
            "holds none, an unbounded multiple of")
         + f" the least busy (target at most {max_imbalance:g}x)"),
    ]
    passed, evidence = verdict(checks)
    placed = {b: sum(1 for x in all_tunnels if x["backend"] == b and cut <= x["opened"] < end)
              for b in pool_after}
    algorithm = algorithm_of(run.config)
    evidence.append("INFO  the tunnels opened after the cut went to: "
                    + ", ".join(f"{b} {n}" for b, n in placed.items()) + f" ({algorithm})")
    refused = refused_handshakes(run, cut, end)
    if refused:
        evidence.append(f"INFO  {sum(refused.values())} handshakes after the cut were refused ("
                        + ", ".join(f"{n} x {s}" for s, n in sorted(refused.items()))
                        + "): each was a user trying again")
    if held:
        evidence.append(f"INFO  {drained} still held {held} tunnels at the end")
    return Result(
        passed=passed,
        headline=(f"{cut_users} users cut: up to {burst} reconnects in {sc.short(window)}, "
                  f"tunnels at the end {spread}"),
        evidence=evidence, metrics={**metrics, "placed_after_cut": placed,
                                     "refused_after_cut": refused},
        chart=tunnels_chart(run, all_tunnels, backends),
        diagrams=[comeback_diagram(drained, cut_users, burst, sc.short(window), placed,
                                   algorithm)])
