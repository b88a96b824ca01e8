"""A window of a learner's live dashboard traffic as a replayable trace.

Theory of operation
-------------------
A lab run records its traffic on purpose (labs/framework/recorder.py); a learner's own
sandbox does not, but its proxy keeps the newest request events (``admin.request_history``,
GET /requests). "Replay the last N seconds" therefore reads those events when the learner
asks, keeps the ones that *started* inside the window, and builds the same `Trace` a lab run
gets (replay_trace.py), so the same replayer and the same side-by-side page serve both:

* **arrivals, request mix, sizes**: each request event's start (its ``ts`` minus its
  latency), method, path with query and body sizes; lab second 0 is the first arrival.
* **backend costs**: what the backend did to each request (backend, status, latency, its
  own time) is kept as ``recorded`` and the toy backends' **fault schedule** is rebuilt:
  the knobs each backend had when the window opened are set at lab second 0, and every
  change the dashboard made inside the window (the fault log, ``log_fault``) is set at its
  own lab second as the backend's whole knob set (a clear, then the knobs not at
  their default, so a cleared knob goes back to its default in the replay too). A kill is listed as not replayed, as in a lab trace.
* **topology**: the proxy's running config, with only the pools' toy backends of this
  sandbox kept (a backend the learner added at another address would send the replay's
  traffic out of its sandboxes, so it is dropped and said so).

Bounds: a window is 5 to MAX_WINDOW_S seconds and at most MAX_REQUESTS requests (the
newest are kept); fewer than MIN_REQUESTS requests is refused with a message saying how to
make traffic. Windows are stored per sandbox (``windows_dir``): the site only ever lists
the folder of a sandbox the visitor may see, so one learner never reaches another's.

``window_trace`` and ``fault_schedule`` are pure (tested on hand-made events);
``capture`` is the I/O edge (the admin API, the toy backends' /_control).
"""
from __future__ import annotations

import copy
import json
import os
import re
import secrets
import time
from pathlib import Path

from labs.framework.replay_trace import Trace, TraceError, dump, request_row

SOURCE = "dashboard"
MIN_WINDOW_S, MAX_WINDOW_S = 5, 120
MIN_REQUESTS = 20
MAX_REQUESTS = 3000
WINDOW_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
# warmup_s restarts a warm-up when set: a window cannot say how far into one it began.
NOT_REPLAYED_KNOBS = ("warmup_s",)


def check_window(seconds) -> int:
    try:
        value = int(seconds)
    except (TypeError, ValueError):
        raise TraceError(f"the window must be a whole number of seconds from {MIN_WINDOW_S} "
                         f"to {MAX_WINDOW_S}, got {seconds!r}") from None
    if not MIN_WINDOW_S <= value <= MAX_WINDOW_S:
        raise TraceError(f"the window must be from {MIN_WINDOW_S} to {MAX_WINDOW_S} seconds, "
                         f"got {value}")
    return value


# ---------------------------------------------------------------- pure

def started(event: dict) -> float:
    """Wall time a request event started (its ts is when it ended)."""
    return float(event["ts"]) - float(event.get("latency_ms") or 0) / 1000.0


def knobs_set(faults: dict, defaults: dict) -> dict:
    """The knobs not at their default (what a fresh toy backend must be told)."""
    return {k: v for k, v in (faults or {}).items()
            if k not in NOT_REPLAYED_KNOBS and defaults.get(k, object()) != v}


def fault_schedule(log: list[dict], faults_now: dict[str, dict], start: float, end: float,
                   defaults: dict) -> list[dict]:
    """Fault lines (replay_trace format, lab seconds from ``start``) for a window.

    ``log``: the dashboard's fault log, {"ts", "backend", "faults": whole knob set after
    the change} or {"ts", "backend", "killed": true}. ``faults_now``: each backend's knobs
    when the window was captured. A backend with no change logged inside the window had its
    current knobs all along; otherwise it had the last logged knobs before the window (none
    logged: the defaults), then each logged change at its second."""
    out = []
    for backend in sorted(faults_now):
        mine = sorted((x for x in log if x.get("backend") == backend), key=lambda x: x["ts"])
        inside = [x for x in mine if start <= x["ts"] <= end]
        if inside:
            before = [x for x in mine if x["ts"] < start and "faults" in x]
            first = before[-1]["faults"] if before else {}
        else:
            first = faults_now[backend]
        initial = knobs_set(first, defaults)
        if initial:
            out.append({"kind": "fault", "t": 0.0, "backend": backend, "set": initial})
        for x in inside:
            t = round(x["ts"] - start, 4)
            if x.get("killed"):
                out.append({"kind": "action", "t": t, "what": f"{backend}: process killed",
                            "replayed": False})
            else:
                # The backend's whole knob set after the change: clear, then set what is
                # not at its default (one line, so the two cannot run out of order).
                out.append({"kind": "fault", "t": t, "backend": backend, "clear": True,
                            "set": knobs_set(x["faults"], defaults)})
    return sorted(out, key=lambda f: f["t"])


def replayable_config(config: dict, backends: list[str]) -> tuple[dict, list[str]]:
    """The running config with only this sandbox's toy backends in its pools, and a note
    for each backend dropped."""
    out = copy.deepcopy(config)
    notes = []
    for name, pool in (out.get("pools") or {}).items():
        kept = []
        for b in (pool or {}).get("backends") or []:
            if b.get("name") in backends:
                kept.append(b)
            else:
                notes.append(f"pool {name}: backend {b.get('name')} ({b.get('address')}) is not "
                             "one of this sandbox's toy backends: left out of the replay")
        pool["backends"] = kept
        if not kept:
            raise TraceError(f"pool {name} has none of this sandbox's toy backends "
                             f"({', '.join(backends)}): there is nothing to replay it on")
    return out, notes


def window_trace(events: list[dict], *, now: float, seconds: int, config: dict,
                 backends: list[str], faults_now: dict[str, dict], fault_log: list[dict],
                 defaults: dict, sandbox_id: str, window_id: str,
                 history_limit: int | None = None) -> Trace:
    """The trace of the last ``seconds`` before ``now`` (see the module doc).

    ``history_limit``: how many events were asked for; when that many came back and the
    oldest started inside the window, the proxy's history did not reach back to the
    window's start, and the trace says so."""
    seconds = check_window(seconds)
    start = now - seconds
    short_history = (history_limit is not None and len(events) >= history_limit
                     and all(started(e) > start for e in events if e.get("ts") is not None))
    picked = [e for e in events if e.get("type", "request") == "request" and e.get("path")
              and e.get("ts") is not None and start <= started(e) <= now]
    picked.sort(key=started)
    capped = len(picked) > MAX_REQUESTS
    picked = picked[-MAX_REQUESTS:]
    if len(picked) < MIN_REQUESTS:
        raise TraceError(
            f"the last {seconds} s of your sandbox saw {len(picked)} HTTP request"
            f"{'' if len(picked) == 1 else 's'}; a replay needs at least {MIN_REQUESTS} to "
            "compare algorithms on (connections through an L4 or UDP listener are not "
            "replayed). Start traffic from the dashboard's traffic panel (or send requests "
            "with curl), wait, then replay a window that covers it")
    replay_config, notes = replayable_config(config, backends)
    t0 = started(picked[0])
    schedule = fault_schedule(fault_log, faults_now, t0, now, defaults)
    requests = []
    for i, e in enumerate(picked):
        t = round(started(e) - t0, 4)
        requests.append(request_row(i, e, t, schedule))
    if short_history:
        notes.append(f"your proxy keeps its newest {history_limit} requests "
                     "(admin.request_history): the replay starts "
                     f"{round(t0 - start, 1)} s into the window you asked for")
    if capped:
        notes.append(f"the window held more than {MAX_REQUESTS} requests: the newest "
                     f"{MAX_REQUESTS} are replayed")
    algorithm = None
    for pool in (config.get("pools") or {}).values():
        algorithm = ((pool or {}).get("balancer") or {}).get("algorithm", "round_robin")
        break
    return Trace(slug=SOURCE, run_id=window_id, algorithm=algorithm,
                 duration=float(seconds), backends=list(backends), config=replay_config,
                 faults=schedule, requests=requests, source=SOURCE, sandbox=sandbox_id,
                 notes=notes)


# ---------------------------------------------------------------- storage

def windows_dir(state_dir: Path, sandbox_id: str) -> Path:
    """Where one sandbox's windows live (the only folder its owner's pages read)."""
    return Path(state_dir) / "windows" / sandbox_id


def window_dir(state_dir: Path, sandbox_id: str, window_id: str) -> Path:
    if not WINDOW_ID.match(window_id or ""):
        raise TraceError(f"{window_id!r} is not a window id")
    return windows_dir(state_dir, sandbox_id) / window_id


def new_window_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def fault_log_path(state_dir: Path, sandbox_id: str) -> Path:
    return windows_dir(state_dir, sandbox_id) / "faults.jsonl"


def log_fault(state_dir: Path, sandbox_id: str, backend: str, faults: dict | None = None,
              killed: bool = False, now: float | None = None) -> None:
    """Append one dashboard fault change (the backend's whole knob set after it)."""
    path = fault_log_path(state_dir, sandbox_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"ts": time.time() if now is None else now, "backend": backend}
    line.update({"killed": True} if killed else {"faults": faults or {}})
    with open(path, "a") as fh:
        fh.write(json.dumps(line, separators=(",", ":")) + "\n")


def read_fault_log(path: Path, keep: int = 2000) -> list[dict]:
    """The newest ``keep`` lines of a fault log (a learner's dashboard changes a few knobs
    a minute; older lines only matter as "the knobs before the window", and a change that
    old is still the backend's current state, which capture reads anyway)."""
    try:
        lines = Path(path).read_text().splitlines()[-keep:]
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash mid-write
        if isinstance(row, dict) and isinstance(row.get("ts"), (int, float)):
            rows.append(row)
    return rows


# ---------------------------------------------------------------- I/O edge

def capture(*, admin_url: str, backend_urls: dict[str, str], seconds: int, state_dir: Path,
            sandbox_id: str, token: str | None = None, now: float | None = None) -> Path:
    """Read the sandbox's recent requests, knobs and config; save the window's trace.

    Returns the window's folder (holding trace.jsonl), ready for replay.start_background.
    Raises TraceError when the window cannot be replayed (too little traffic...)."""
    from labs.backend.faults import DEFAULTS
    from labs.sandbox.admin_client import AdminClient, AdminError, BackendControl

    seconds = check_window(seconds)
    now = time.time() if now is None else now
    admin = AdminClient(admin_url, timeout=5.0, token=token)
    try:
        config = admin.config()
        keep = int(((config.get("admin") or {}).get("request_history")) or 10_000)
        limit = min(keep, MAX_REQUESTS * 2)
        events = admin.recent_requests(limit=limit)
        faults_now = {name: (BackendControl(url, timeout=3.0).faults() or {}).get("faults", {})
                      for name, url in backend_urls.items()}
    except AdminError as exc:
        raise TraceError(f"could not read your sandbox: {exc}") from None
    window_id = new_window_id()
    log = read_fault_log(fault_log_path(state_dir, sandbox_id))
    trace = window_trace(events, now=now, seconds=seconds, config=config,
                         backends=list(backend_urls), faults_now=faults_now, fault_log=log,
                         defaults=DEFAULTS, sandbox_id=sandbox_id, window_id=window_id,
                         history_limit=limit)
    out = window_dir(state_dir, sandbox_id, window_id)
    out.mkdir(parents=True, exist_ok=True)
    dump(trace, out / "trace.jsonl")
    os.utime(out)
    return out
