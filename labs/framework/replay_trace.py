"""A lab run's traffic as a replayable trace (JSON lines), built from its recording.

Theory of operation
-------------------
A counterfactual replay ("what if this pool had used least outstanding requests?") needs
exactly the traffic the run saw and exactly the backend behaviour it met, so that the only
thing that differs between replays is the balancing algorithm. The recording already holds
both: every request event (when it started, method, path with query, body sizes, which
backend served it, status, latency, the proxy's timings) and the runner's timeline (every
fault it set or cleared, with the lab second it really happened at). ``from_recording``
turns them into a `Trace`; ``dump``/``load`` write and read ``trace.jsonl`` next to the
run's recording.json. Pure: no clock, no sockets.

Why the backend cost is replayed as *backend state* plus a *per-request seed*, not as a
fixed per-request delay: a request's cost depends on where it went. In the slow-backend
lab a request that round robin sent to b3 cost 40 ms of CPU because b3 was slow, not
because the request was heavy. Pinning that cost to the request would make it just as slow
on b1 under another algorithm and erase the very effect being compared. So each replay
gets (1) the same fault schedule, per backend, at the same lab seconds (the knobs the toy
backends apply: latency, jitter, CPU, error rates, warm-up...), (2) the same request
(path and query carry the work the request asks for, e.g. /work?ms=10, and the same body
size), and (3) the same random draw for each request: the replayer sends
``X-LBLab-Replay-Seed: <i>`` and the toy backend seeds that request's fault decisions
(jitter, error_rate, reset/crash rates) with it. Same backend, same time, same request:
same cost, whichever algorithm sent it there. Each request line also keeps the cost the
backend applied in the recorded run (its status, the time the backend took, and the fault
knobs active on it then) so the recorded run can be compared with its replays.

Format (one JSON object a line; the first line is the header)::

    {"kind": "trace", "version": 1, "slug", "run_id", "algorithm", "duration",
     "backends": [...], "config": {...learner's proxy config...}, "requests": N,
     "source": "lab" | "dashboard", "sandbox": id | null, "notes": [...]}
    {"kind": "fault", "t": 0.0, "backend": "b3", "set": {"cpu_ms": 40}}
    {"kind": "fault", "t": 4.0, "backend": "b3", "clear": true}
    {"kind": "action", "t": 2.0, "what": "b2: process crashed", "replayed": false}
    {"kind": "request", "i": 0, "t": 0.0, "method": "GET", "path": "/work?ms=10",
     "bytes_in": 0, "bytes_out": 61, "seed": 0,
     "recorded": {"backend": "b1", "status": 200, "latency_ms": 11.2, "backend_ms": 10.6,
                  "termination": "--", "faults": {}}}

``t`` is lab seconds: 0 is the first request's start. Requests are in arrival order and
``i`` is their index. Actions the replayer cannot reproduce (a crash, a restart, an admin
verb, a deploy) are kept with ``"replayed": false`` so a reader sees what the replay lacks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from labs.framework.recording import Recording, started_at

VERSION = 1
FILENAME = "trace.jsonl"


class TraceError(ValueError):
    """A trace that cannot be built or read; the message says what to do."""


@dataclass
class Trace:
    slug: str
    run_id: str
    algorithm: str | None
    duration: float
    backends: list[str]
    config: dict
    faults: list[dict] = field(default_factory=list)  # kind fault | action, by t
    requests: list[dict] = field(default_factory=list)  # kind request, by t
    # "lab": a lab run's trace (slug names the lab); "dashboard": a window of a learner's
    # sandbox (replay_window.py; the topology is the config and backends above).
    source: str = "lab"
    sandbox: str | None = None  # the sandbox a dashboard window came from
    notes: list[str] = field(default_factory=list)  # what the trace could not keep

    @property
    def end(self) -> float:
        return max((r["t"] for r in self.requests), default=0.0)

    def header(self) -> dict:
        return {"kind": "trace", "version": VERSION, "slug": self.slug, "run_id": self.run_id,
                "algorithm": self.algorithm, "duration": self.duration,
                "backends": self.backends, "config": self.config,
                "requests": len(self.requests), "source": self.source,
                "sandbox": self.sandbox, "notes": self.notes}

    def replayable_faults(self) -> list[dict]:
        return [f for f in self.faults if f["kind"] == "fault"]


# ---------------------------------------------------------------- building

def request_row(i: int, event: dict, t: float, schedule) -> dict:
    """One request of a trace: what to send at lab second ``t`` and what was recorded."""
    return {
        "kind": "request", "i": i, "t": t, "method": event.get("method") or "GET",
        "path": event["path"], "bytes_in": int(event.get("bytes_in") or 0),
        "bytes_out": int(event.get("bytes_out") or 0), "seed": i,
        "recorded": {"backend": event.get("backend"), "status": int(event.get("status") or 0),
                     "latency_ms": event.get("latency_ms"), "backend_ms": backend_ms(event),
                     "termination": event.get("termination") or "--",
                     "faults": faults_at(schedule, event.get("backend") or "", t)},
    }


def parse_knobs(text: str) -> dict:
    """The knobs of a runner mark's "b3: cpu_ms=40, hang=True" (runner._knobs)."""
    out = {}
    for part in text.split(", "):
        name, sep, raw = part.partition("=")
        if not sep:
            raise TraceError(f"cannot read fault knobs from {text!r}")
        out[name.strip()] = _value(raw.strip())
    return out


def _value(raw: str):
    if raw in ("True", "False"):
        return raw == "True"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def fault_schedule(timeline: list[dict]) -> list[dict]:
    """The runner's timeline as fault lines: set/clear knobs are replayable, the rest not."""
    out = []
    for m in timeline:
        kind, what, backend = m.get("kind"), m.get("what") or "", m.get("backend")
        if m.get("planned"):
            continue  # the summary line of a repeated spike; its steps are marks of their own
        if kind == "fault" and backend and what.startswith(f"{backend}: "):
            rest = what[len(backend) + 2:]
            if rest == "faults cleared":
                out.append({"kind": "fault", "t": m["t"], "backend": backend, "clear": True})
                continue
            try:
                out.append({"kind": "fault", "t": m["t"], "backend": backend,
                            "set": parse_knobs(rest)})
                continue
            except TraceError:
                pass
        if kind in ("fault", "admin", "deploy", "autoscaler"):
            out.append({"kind": "action", "t": m["t"], "what": what, "replayed": False})
    return sorted(out, key=lambda f: f["t"])


def faults_at(schedule: list[dict], backend: str, t: float) -> dict:
    """The fault knobs set on ``backend`` (not at their default) at lab second ``t``."""
    knobs: dict = {}
    for f in schedule:
        if f["kind"] != "fault" or f["backend"] != backend or f["t"] > t:
            continue
        if f.get("clear"):
            knobs = {}
        knobs.update(f.get("set") or {})  # a line may clear then set (a dashboard window)
    return {k: v for k, v in knobs.items() if v not in (0, False, None)}


def backend_ms(event: dict) -> float | None:
    """How long the backend took: from connected (or picked) to the end of the response."""
    tm = event.get("timings") or {}
    start = tm.get("connected", tm.get("backend_picked"))
    end = tm.get("done")
    if start is None or end is None:
        return None
    return round(float(end) - float(start), 3)


def pool_algorithm(config: dict) -> str | None:
    for pool in (config.get("pools") or {}).values():
        return ((pool or {}).get("balancer") or {}).get("algorithm", "round_robin")
    return None


def from_recording(recording: Recording, run_id: str, backends: list[str]) -> Trace:
    """The trace of a recorded run (see the module doc)."""
    events = [e for e in recording.requests() if e.get("path")]
    if not events:
        raise TraceError("this run recorded no HTTP requests: there is nothing to replay "
                         "(an L4 lab's connections are not replayed)")
    events.sort(key=started_at)
    schedule = fault_schedule(recording.timeline)
    requests = []
    for i, e in enumerate(events):
        t = max(0.0, round(started_at(e), 4))
        requests.append(request_row(i, e, t, schedule))
    return Trace(slug=recording.slug, run_id=run_id, algorithm=pool_algorithm(recording.config),
                 duration=recording.duration, backends=list(backends),
                 config=recording.config, faults=schedule, requests=requests)


# ---------------------------------------------------------------- JSON lines

def dump(trace: Trace, path: Path) -> Path:
    lines = [trace.header(), *trace.faults, *trace.requests]
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in lines))
    tmp.replace(path)
    return Path(path)


def load(path: Path) -> Trace:
    try:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise TraceError(f"no trace at {path}") from None
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}: line {exc.lineno} is not JSON") from None
    if not rows or rows[0].get("kind") != "trace":
        raise TraceError(f"{path}: the first line must be the trace header")
    head = rows[0]
    if head.get("version") != VERSION:
        raise TraceError(f"{path}: trace version {head.get('version')!r}; this replayer reads "
                         f"version {VERSION}")
    return Trace(slug=head["slug"], run_id=head["run_id"], algorithm=head.get("algorithm"),
                 duration=float(head.get("duration") or 0), backends=list(head["backends"]),
                 config=head.get("config") or {},
                 faults=[r for r in rows[1:] if r.get("kind") in ("fault", "action")],
                 requests=[r for r in rows[1:] if r.get("kind") == "request"],
                 source=head.get("source") or "lab", sandbox=head.get("sandbox"),
                 notes=list(head.get("notes") or []))


def for_run(run_dir: Path, backends: list[str] | None = None) -> Trace:
    """The run's trace: trace.jsonl, or built from recording.json (and saved) if missing."""
    run_dir = Path(run_dir)
    path = run_dir / FILENAME
    if path.exists():
        return load(path)
    rec_path = run_dir / "recording.json"
    if not rec_path.exists():
        raise TraceError(f"{run_dir} has no recording.json: run the lab to the end first")
    recording = Recording.load(rec_path)
    if backends is None:
        from labs.framework import registry

        backends = registry.get(recording.slug).backend_names
    trace = from_recording(recording, run_dir.name, backends)
    dump(trace, path)
    return trace
