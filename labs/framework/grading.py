"""What a grader returns, and the pieces graders share (charts, diagrams, wording).

A grader is ``grade(run: Recording) -> Result``: pass or fail, with evidence in numbers
("between b2's freeze and its removal 41 requests failed; the target is at most 10"), the
measured values (``metrics``), a chart (plain data: lab seconds on x, one or more series,
markers for the timeline), and Mermaid diagrams of the critical moment drawn from the
recorded events with the explainer's own generators (labs/diagrams.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from labs.framework.recording import Recording, failed, started_at

try:  # the explainer's generators: one drawing of a request or a health episode, site-wide
    from labs.diagrams import escape, health_episode, request_sequence
except ImportError:  # pragma: no cover - the explainer app is part of the repo
    health_episode = request_sequence = None

    def escape(text, limit=120):
        return str(text)[:limit].replace('"', "'").replace(";", ",")

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
           "#4b5563"]


@dataclass
class Result:
    passed: bool
    headline: str
    evidence: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    chart: dict | None = None
    diagrams: list[dict] = field(default_factory=list)  # [{"title", "mermaid"}]
    # False: part of the sandbox or the traffic died during the run; the verdict is
    # neither pass nor fail ("this run can't be graded"), see ``ungradable``.
    graded: bool = True

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Result":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def ungradable(run: Recording) -> Result:
    """The result of a run during which the proxy, a backend, the event stream or the
    traffic died: what died and when, and no verdict on the config."""
    sc = run.scale
    # A process that died is the cause; a broken event stream or failing traffic is
    # usually its consequence.
    first = next((b for b in run.broken if b["part"] not in ("event stream", "traffic")),
                 run.broken[0])
    lines = [f"BROKEN  at {sc.short(b['t'])}: {b['what']}" for b in run.broken]
    lines.append("INFO  the numbers of this run measure the breakage, not your config: "
                 "run the lab again (if it keeps happening, the sandbox's logs say why)")
    return Result(
        passed=False, graded=False,
        headline=(f"This run can't be graded: {first['what']} at {sc.short(first['t'])}"
                  + (f" (and {len(run.broken) - 1} more)" if len(run.broken) > 1 else "")),
        evidence=lines,
        metrics={"graded": False, "broken": run.broken},
        chart=outcome_chart(run, marker_kinds=["fault", "admin", "broken"]))


def verdict(checks: list[tuple[bool, str]]) -> tuple[bool, list[str]]:
    """All checks must hold; each line is prefixed with its own outcome."""
    lines = [("PASS  " if ok else "FAIL  ") + text for ok, text in checks]
    return all(ok for ok, _ in checks), lines


# ---------------------------------------------------------------- charts

def _buckets(run: Recording, bucket: float, start: float | None = None,
             end: float | None = None) -> list[float]:
    start = -0.0 if start is None else start
    end = run.end if end is None else end
    n = max(1, int((end - start) / bucket + 0.999))
    return [round(start + i * bucket, 3) for i in range(n)]


def markers(run: Recording, kinds: Iterable[str] | None = None) -> list[dict]:
    out = []
    for m in run.timeline:
        if kinds is not None and m.get("kind") not in kinds:
            continue
        if m.get("chart") is False:
            continue
        out.append({"t": round(m["t"], 3), "label": m.get("label") or m.get("what", "")})
    return out


def count_chart(run: Recording, title: str, series: dict[str, Callable[[dict], bool]],
                bucket: float = 0.25, y_label: str = "requests per second",
                start: float | None = None, end: float | None = None,
                marker_kinds: Iterable[str] | None = None) -> dict:
    """Requests per second in each bucket, one series per predicate (by start time)."""
    xs = _buckets(run, bucket, start, end)
    values = {label: [0.0] * len(xs) for label in series}
    first = xs[0]
    for e in run.requests():
        i = int((started_at(e) - first) / bucket)
        if 0 <= i < len(xs):
            for label, pred in series.items():
                if pred(e):
                    values[label][i] += 1.0 / bucket
    return chart(title, xs, [(label, values[label]) for label in series], y_label,
                 run, marker_kinds)


def outcome_chart(run: Recording, title: str = "Requests per second, by outcome",
                  bucket: float = 0.25, **kw) -> dict:
    return count_chart(run, title, {"answered": lambda e: not failed(e),
                                    "failed": failed}, bucket, **kw)


def backend_chart(run: Recording, backends: list[str], title: str = "Requests per second, "
                  "by backend", bucket: float = 0.25, failures: bool = True, **kw) -> dict:
    series = {b: (lambda e, b=b: e.get("backend") == b) for b in backends}
    if failures:
        series["failed"] = failed
    return count_chart(run, title, series, bucket, **kw)


def latency_chart(run: Recording, title: str, bucket: float = 0.5, q: float = 99,
                  groups: dict[str, Callable[[dict], bool]] | None = None, **kw) -> dict:
    from labs.framework.recording import percentile

    xs = _buckets(run, bucket, kw.pop("start", None), kw.pop("end", None))
    groups = groups or {"all requests": lambda e: True}
    samples = {label: [[] for _ in xs] for label in groups}
    for e in run.requests():
        i = int((started_at(e) - xs[0]) / bucket)
        if 0 <= i < len(xs):
            for label, pred in groups.items():
                if pred(e):
                    samples[label][i].append(float(e.get("latency_ms") or 0))
    series = [(f"p{q:g} {label}", [percentile(s, q) for s in samples[label]]) for label in groups]
    return chart(title, xs, series, "milliseconds", run, kw.get("marker_kinds"))


def chart(title: str, xs: list[float], series: list[tuple[str, list]], y_label: str,
          run: Recording | None = None, marker_kinds: Iterable[str] | None = None) -> dict:
    return {
        "title": title, "x": xs, "x_label": "lab seconds", "y_label": y_label,
        "series": [{"label": label, "values": [None if v is None else round(v, 3) for v in vals],
                    "color": PALETTE[i % len(PALETTE)]} for i, (label, vals) in enumerate(series)],
        "markers": markers(run, marker_kinds) if run is not None else [],
        "time_scale": run.time_scale if run is not None else 1,
    }


def bar_chart(title: str, labels: list[str], values: list[float], y_label: str,
              run: Recording | None = None, highlight: str | None = None) -> dict:
    """A category chart (per backend): drawn as bars; no time axis."""
    return {"title": title, "kind": "bars", "labels": labels,
            "values": [round(v, 3) for v in values], "y_label": y_label,
            "highlight": highlight, "time_scale": run.time_scale if run else 1}


# ---------------------------------------------------------------- diagrams

def request_diagram(event: dict | None, title: str) -> dict | None:
    if event is None or request_sequence is None:
        return None
    return {"title": title, "mermaid": request_sequence(event)}


def health_diagram(run: Recording, backend: str, title: str, start: float | None = None,
                   end: float | None = None, limit: int = 24) -> dict | None:
    if health_episode is None:
        return None
    events = [e for e in run.events
              if (start is None or e["t"] >= start) and (end is None or e["t"] <= end)]
    return {"title": title, "mermaid": health_episode(events, backend, limit=limit)}


def moment_diagram(run: Recording, title: str, start: float, end: float,
                   participants: list[str], limit: int = 30,
                   failures: list[dict] | None = None, keep_first: int = 3,
                   keep_last: int = 2) -> dict:
    """A sequence diagram of what happened around a moment: the runner's actions (faults,
    admin verbs), state changes, drains and failed requests, in time order, each with
    its lab and production time.

    ``failures``: the failed requests the grader counted (its headline's number), drawn
    whatever their end time; without it, the failed requests that ended in the window.
    A long run of failures is folded: the first ``keep_first`` and last ``keep_last`` are
    drawn and one note says exactly how many were left out, so the drawn rows plus the
    folded count always equal the count given. Other steps beyond ``limit`` are left
    out (oldest first) and counted in a note of their own; a failure is never dropped
    silently.
    """
    sc = run.scale
    ids = {name: f"B{i}" for i, name in enumerate(participants)}
    other: list[tuple[float, str]] = []
    for m in run.timeline:
        if m.get("backend") and m["backend"] not in ids:
            continue  # an action on a backend this picture is not about
        if start <= m["t"] <= end:
            target = ids.get(m.get("backend"))
            text = escape(f"{sc.short(m['t'])}: {m.get('label') or m.get('what')}", 110)
            other.append((m["t"], f"  R->>{target}: {text}" if target else f"  Note over R: {text}"))
    for e in run.events:
        if not start <= e["t"] <= end:
            continue
        b = ids.get(e.get("backend"))
        when = sc.short(e["t"])
        if e.get("type") == "state_change" and b:
            text = escape(f"{when}: {e.get('kind')} {e.get('old')} → {e.get('new')}: "
                          f"{e.get('cause', '')}", 130)
            other.append((e["t"], f"  Note over P,{b}: {text}"))
        elif e.get("type") == "drain" and b:
            text = escape(f"{when}: drain {e.get('what')} {e.get('detail') or ''}", 110)
            other.append((e["t"], f"  P-->>{b}: {text}"))
    counted = failures is not None  # the grader's own count, or just this window's
    if failures is None:
        failures = [e for e in run.events if e.get("type") == "request" and failed(e)
                    and start <= e["t"] <= end]
    # Placed (and labelled) by when they began: a request sent to a frozen backend before
    # its removal fails later, at the response timeout, but belongs before the removal.
    failures = sorted(failures, key=started_at)
    drawn, folded = fold(failures, keep_first, keep_last)
    failed_rows = []
    for e in drawn:
        who = ids.get(e.get("backend"))
        took = float(e.get("latency_ms") or 0)
        text = escape(f"{sc.short(started_at(e))}: {e.get('method')} "
                      f"{e.get('path', '')[:30]} → {e.get('status') or 'no answer'} "
                      f"{e.get('termination')} after {took:.0f} ms", 110)
        failed_rows.append((started_at(e),
                            f"  {who}--xP: {text}" if who else f"  P--xC: {text}"))
    if folded:
        at = started_at(failures[keep_first])
        noun = "request" if folded == 1 else "requests"
        failed_rows.insert(keep_first, (at, f"  Note over C,P: ... {folded} more failed "
                                            f"{noun} not drawn ..."))
    other.sort(key=lambda r: r[0])
    dropped = max(0, len(other) + len(failed_rows) - limit)
    dropped = min(dropped, len(other))
    other = other[dropped:]
    rows = sorted(other + failed_rows, key=lambda r: r[0])
    lines = ["sequenceDiagram", "  participant C as clients", "  participant P as proxy",
             *[f"  participant {ids[n]} as {escape(n, 30)}" for n in participants],
             "  participant R as lab runner"]
    if failures:
        n = len(failures)
        lines.append(f"  Note over C,P: {n} failed request{'s' if n != 1 else ''}"
                     f"{'' if counted else ' in this window'}: {len(drawn)} drawn"
                     + (f", {folded} folded" if folded else ""))
    if dropped:
        lines.append(f"  Note over C,R: {dropped} earlier step{'s' if dropped != 1 else ''} "
                     "not shown (no failed request among them)")
    lines += [line for _, line in rows] or ["  Note over C,R: nothing happened in this window"]
    return {"title": title, "mermaid": "\n".join(lines),
            "counts": {"failed": len(failures), "drawn": len(drawn), "folded": folded}}


def fold(items: list, keep_first: int = 3, keep_last: int = 2) -> tuple[list, int]:
    """The items to draw and how many were left out: all of them when at most
    keep_first + keep_last + 1 (folding one row into a note saves nothing)."""
    if len(items) <= keep_first + keep_last + 1:
        return list(items), 0
    return items[:keep_first] + items[len(items) - keep_last:], \
        len(items) - keep_first - keep_last


def drop_none(items: list) -> list:
    return [i for i in items if i]
