"""Side-by-side results of replays of one trace: pure functions of the recorded events.

Theory of operation
-------------------
Each replay ("lane") brings the proxy's request events (matched to trace lines by the
request id ``rp-<i>`` the replayer sent) and what its client saw. ``summarise`` turns one
lane into the figures a learner compares: requests sent and answered, errors (the same
rule as the graders: recording.failed), p50/p99 of the proxy's latency, requests per
backend, and per-backend load over time (requests that *started* in each bucket, by
backend). ``divergence`` walks the trace in arrival order and finds the first request a
lane sent to another backend than the baseline (the first lane) did, with both events'
"why": the algorithm, its inputs (a round-robin index, the outstanding counts...) and each
candidate's outstanding requests at that instant. ``table`` renders the CLI's text table.
No I/O, no clock: tested on hand-made events.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from labs.framework.recording import failed, percentile, started_at
from labs.framework.replay_trace import Trace

BUCKET_S = 0.5


@dataclass
class LaneData:
    label: str
    algorithm: str
    events: list[dict]
    client: dict  # i -> {"status", "latency_ms", "late_ms", "backend"?, "error"?}
    faults_applied: list[dict] = field(default_factory=list)


def index_of(event: dict) -> int | None:
    rid = str(event.get("request_id") or "")
    if rid.startswith("rp-") and rid[3:].isdigit():
        return int(rid[3:])
    return None


def by_index(events: list[dict]) -> dict[int, dict]:
    out = {}
    for e in events:
        i = index_of(e)
        if i is not None:
            out[i] = e
    return out


def why(event: dict | None) -> str:
    """The decision behind one request event, in one line."""
    if event is None:
        return "no event recorded for this request"
    if event.get("backend") is None:
        return f"no backend: {event.get('error') or 'the proxy answered itself'}"
    cands = ", ".join(f"{c.get('name')}={c.get('outstanding', 0)}"
                      + ("" if c.get("eligible", True) else " (not eligible)")
                      for c in event.get("candidates") or [])
    inputs = json.dumps(event.get("inputs") or {}, separators=(",", ":"), sort_keys=True)
    sticky = event.get("sticky") or {}
    lead = (f"sticky {sticky.get('mode')}: {sticky.get('reason')}; " if sticky.get("hit")
            else "")
    return (f"{lead}{event.get('algorithm')} picked {event['backend']} with inputs {inputs}; "
            f"outstanding per candidate: {cands or 'none listed'}")


def _load(starts: list[tuple[float, str]], backends: list[str], end: float,
          bucket: float) -> dict[str, list[int]]:
    n = max(1, int(end // bucket) + 1)
    out = {b: [0] * n for b in backends}
    for t, b in starts:
        if b is None:
            continue
        row = out.setdefault(b, [0] * n)
        row[min(n - 1, max(0, int(t // bucket)))] += 1
    return out


def summarise(trace: Trace, lane: LaneData, bucket: float = BUCKET_S) -> dict:
    events = by_index(lane.events)
    latencies, errors, per_backend, starts = [], 0, {}, []
    for r in trace.requests:
        i = r["i"]
        e = events.get(i)
        if e is None:
            # The proxy never reported it (the client could not connect, or it timed out):
            # an error as a user sees it.
            errors += 1
            continue
        latencies.append(float(e.get("latency_ms") or 0))
        if failed(e):
            errors += 1
        b = e.get("backend")
        per_backend[b or "-"] = per_backend.get(b or "-", 0) + 1
        starts.append((r["t"], b))
    late = [float((lane.client.get(r["i"]) or {}).get("late_ms") or 0) for r in trace.requests]
    return {
        "label": lane.label, "algorithm": lane.algorithm, "sent": len(trace.requests),
        "answered": sum(1 for r in trace.requests if (lane.client.get(r["i"]) or {}).get(
            "status")),
        "events": len(events), "errors": errors,
        "bytes_in": sum(int(e.get("bytes_in") or 0) for e in events.values()),
        "p50_ms": _round(percentile(latencies, 50)), "p99_ms": _round(percentile(latencies, 99)),
        "per_backend": {b: per_backend.get(b, 0) for b in
                        [*trace.backends, *sorted(set(per_backend) - set(trace.backends))]},
        "load": _load(starts, trace.backends, trace.end, bucket),
        "max_late_ms": _round(max(late, default=0.0)),
        "faults_applied": lane.faults_applied,
    }


def recorded_summary(trace: Trace, bucket: float = BUCKET_S) -> dict:
    """The same figures for the recorded run itself (from the trace's recorded fields)."""
    rows = [r["recorded"] for r in trace.requests]
    lat = [float(x.get("latency_ms") or 0) for x in rows]
    per_backend: dict = {}
    for x in rows:
        per_backend[x.get("backend") or "-"] = per_backend.get(x.get("backend") or "-", 0) + 1
    return {"label": f"recorded ({trace.algorithm})", "algorithm": trace.algorithm,
            "sent": len(rows), "answered": len(rows), "events": len(rows),
            "errors": sum(1 for x in rows if failed(x)),
            "p50_ms": _round(percentile(lat, 50)), "p99_ms": _round(percentile(lat, 99)),
            "per_backend": {b: per_backend.get(b, 0) for b in
                            [*trace.backends, *sorted(set(per_backend) - set(trace.backends))]},
            "load": _load([(r["t"], r["recorded"].get("backend")) for r in trace.requests],
                          trace.backends, trace.end, bucket)}


def divergence(trace: Trace, baseline: LaneData, other: LaneData) -> dict | None:
    """The first request (arrival order) ``other`` routed elsewhere than ``baseline``."""
    base, mine = by_index(baseline.events), by_index(other.events)
    for r in trace.requests:
        a, b = base.get(r["i"]), mine.get(r["i"])
        ba = a.get("backend") if a else None
        bb = b.get("backend") if b else None
        if ba != bb:
            return {"i": r["i"], "t": r["t"], "method": r["method"], "path": r["path"],
                    "baseline": {"label": baseline.label, "backend": ba, "why": why(a)},
                    "other": {"label": other.label, "backend": bb, "why": why(b)}}
    return None


def agreement(trace: Trace, a: LaneData, b: LaneData) -> dict:
    """How closely two replays of one algorithm agree: the determinism figures (module
    doc of replay.py; the stated tolerance is in labs/catalog/README.md)."""
    ea, eb = by_index(a.events), by_index(b.events)
    same = sum(1 for r in trace.requests
               if r["i"] in ea and r["i"] in eb
               and ea[r["i"]].get("backend") == eb[r["i"]].get("backend"))
    sa, sb = summarise(trace, a), summarise(trace, b)

    def diff(key):
        x, y = sa[key], sb[key]
        return None if x is None or y is None else round(abs(x - y), 1)

    return {"labels": [a.label, b.label], "algorithm": a.algorithm,
            "same_backend": same, "requests": len(trace.requests),
            "same_backend_share": round(same / max(1, len(trace.requests)), 4),
            "counts_equal": sa["per_backend"] == sb["per_backend"],
            "count_diff": {k: abs(sa["per_backend"].get(k, 0) - sb["per_backend"].get(k, 0))
                           for k in sorted(set(sa["per_backend"]) | set(sb["per_backend"]))},
            "errors_diff": abs(sa["errors"] - sb["errors"]),
            "p50_diff_ms": diff("p50_ms"), "p99_diff_ms": diff("p99_ms")}


def repeats(trace: Trace, lanes: list[LaneData]) -> list[dict]:
    """agreement() of each algorithm's first lane with its other lanes (``--repeat``)."""
    first: dict[str, LaneData] = {}
    out = []
    for lane in lanes:
        if lane.algorithm in first:
            out.append(agreement(trace, first[lane.algorithm], lane))
        else:
            first[lane.algorithm] = lane
    return out


def compare(trace: Trace, lanes: list[LaneData], bucket: float = BUCKET_S) -> dict:
    return {
        "repeats": repeats(trace, lanes),
        "slug": trace.slug, "run_id": trace.run_id, "requests": len(trace.requests),
        "span_s": round(trace.end, 3), "bucket_s": bucket,
        "recorded": recorded_summary(trace, bucket),
        "lanes": [summarise(trace, lane, bucket) for lane in lanes],
        "divergence": [{"label": lane.label, "first": divergence(trace, lanes[0], lane)}
                       for lane in lanes[1:]],
        "not_replayed": [f for f in trace.faults if f["kind"] == "action"],
        "faults": trace.replayable_faults(),
    }


def page_rows(result: dict) -> dict:
    """What the side-by-side page shows: the backends (columns), one row per run with its
    counts and load series, and the bucket labels."""
    rows = [result["recorded"], *result["lanes"]]
    backends = list(dict.fromkeys(b for r in rows for b in r["per_backend"]))
    bucket = result["bucket_s"]
    width = max((len(s) for r in rows for s in r["load"].values()), default=0)
    return {"backends": backends,
            "rows": [{**r, "counts": [r["per_backend"].get(b, 0) for b in backends],
                      "series": [(b, r["load"].get(b) or []) for b in backends]} for r in rows],
            "buckets": [f"{k * bucket:g}" for k in range(width)]}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


# ---------------------------------------------------------------- text

def table(result: dict) -> str:
    """The CLI's table: one row per run (the recorded one first), then the divergences."""
    rows = [result["recorded"], *result["lanes"]]
    backends = list(rows[0]["per_backend"])
    for r in rows[1:]:
        backends += [b for b in r["per_backend"] if b not in backends]
    head = ["run", "requests", "errors", "p50 ms", "p99 ms", *backends]
    body = [[r["label"], str(r["events"]), str(r["errors"]), _num(r["p50_ms"]),
             _num(r["p99_ms"]), *[str(r["per_backend"].get(b, 0)) for b in backends]]
            for r in rows]
    widths = [max(len(x[k]) for x in [head, *body]) for k in range(len(head))]
    lines = ["  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                       for k, (c, w) in enumerate(zip(row, widths))) for row in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"load over time (requests started per {result['bucket_s']:g} s, by backend):")
    for r in rows:
        lines.append(f"  {r['label']}")
        for b in backends:
            series = r["load"].get(b) or []
            lines.append(f"    {b:>6} {' '.join(f'{n:3d}' for n in series)}")
    lines.append("")
    base = result["lanes"][0]["label"] if result["lanes"] else "-"
    for d in result["divergence"]:
        first = d["first"]
        if first is None:
            lines.append(f"{d['label']}: routed every request like {base}")
            continue
        lines.append(f"{d['label']} first diverges from {base} at lab second {first['t']:.3f} "
                     f"(request {first['i']}, {first['method']} {first['path']}):")
        lines.append(f"  {base}: {first['baseline']['why']}")
        lines.append(f"  {d['label']}: {first['other']['why']}")
    for a in result.get("repeats") or []:
        lines.append(f"{a['labels'][1]} vs {a['labels'][0]}: same backend for "
                     f"{a['same_backend']} of {a['requests']} requests, per-backend counts "
                     f"{'identical' if a['counts_equal'] else 'differ by ' + str(a['count_diff'])}"
                     f", errors differ by {a['errors_diff']}, p50 by {_num(a['p50_diff_ms'])} ms"
                     f", p99 by {_num(a['p99_diff_ms'])} ms")
    for a in result.get("not_replayed") or []:
        lines.append(f"NOT REPLAYED at {a['t']:g}s: {a['what']}")
    for note in result.get("notes") or []:
        lines.append(f"NOTE: {note}")
    if result.get("seed") is not None:
        lines.append(f"balancer seed (every lane): {result['seed']}")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"
