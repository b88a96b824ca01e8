"""Traffic runs: locust profiles (labs/locust/) against a sandbox, as separate processes.

Theory of operation
-------------------
Locust is never imported here: it monkeypatches the standard library with gevent, which
would break Django, daphne and asyncio in the calling process. A run is a headless locust
process (``labs.sandbox.commands.locust_cmd``) in its own process group, wrapped by
``/bin/sh`` only to record its exit status in a file:

    <state_dir>/traffic/<run_id>.json      the run: sandbox, profile, options, pid, times
    <state_dir>/traffic/<run_id>/          locust.log, rc (exit status), stats CSVs

Like sandboxes, runs are files, so the process that asks for a status need not be the one
that started the run. The locustfiles write their CSV every second (lblab_common), so
``status`` reads live numbers from ``<prefix>_stats.csv`` (the "Aggregated" row, plus one
row per request name) while the run goes on. Locust exits 0 even when requests fail
(``--exit-code-on-error 0``: failures are what many labs are about); any other exit status
means locust itself failed and the status carries the end of its log.

One run per sandbox: two locust processes against one proxy would mix their numbers and
leave a progress bar following whichever run the page asked about. ``start`` refuses
while a run of that sandbox is still sending (saying which, and how to stop it), or, with
``replace=True``, stops it first; a per-sandbox file lock makes the check and the start
one step, so two Start clicks cannot both get through. ``stop_all`` stops every run of
a sandbox. Progress counts from when locust really started sending (the first second
its CSV history shows requests), not from when its process was launched: locust needs a
second or two to start, and its ``-t`` timer starts with the test, not the process.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

from labs.sandbox import procs
from labs.sandbox.commands import REPO_ROOT, local_executables, locust_cmd
from labs.sandbox.service import default_state_dir
from labs.problems import Problem

LOCUST_DIR = REPO_ROOT / "labs" / "locust"
PROFILES = {name: LOCUST_DIR / f"{name}.py"
            for name in ("steady", "bursty", "heavy_user", "nat", "uploads")}
RUN_ID = re.compile(r"^[a-z0-9-]{1,40}$")


class TrafficError(Problem):
    """A run cannot be started or found; the message says what to change.

    409 by default (another run is sending, too many runs); a bad option is a 400 naming
    the field, an unknown run a 404."""

    status = 409


class TrafficService:
    def __init__(self, state_dir: str | Path | None = None, max_runs: int = 8,
                 locust: str | None = None):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.dir = self.state_dir / "traffic"
        self.max_runs = max_runs
        self.locust = locust or local_executables()["locust"]
        self._popens: dict[str, subprocess.Popen] = {}

    # -- files -----------------------------------------------------------------------------

    def _path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def _read(self, run_id: str) -> dict:
        if not RUN_ID.match(run_id or ""):
            raise TrafficError(f"{run_id!r} is not a run id", status=404, path="run_id")
        try:
            return json.loads(self._path(run_id).read_text())
        except FileNotFoundError:
            raise TrafficError(f"no traffic run {run_id!r}", status=404, path="run_id") from None

    def _write(self, run: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{run['run_id']}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(run, indent=2))
        os.replace(tmp, self._path(run["run_id"]))

    def _runs(self) -> list[dict]:
        if not self.dir.exists():
            return []
        runs = []
        for path in self.dir.glob("*.json"):
            try:
                runs.append(json.loads(path.read_text()))
            except (json.JSONDecodeError, FileNotFoundError):
                continue
        return sorted(runs, key=lambda r: r["started_at"])

    # -- start -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _sandbox_lock(self, sandbox_id: str):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f".{sandbox_id}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def running_for(self, sandbox_id: str) -> list[dict]:
        """The run records of ``sandbox_id`` whose locust still runs."""
        return [r for r in self._runs() if r["sandbox_id"] == sandbox_id
                and self._state(r) == "running"]

    def start(self, sandbox, profile: str, users: int = 10, spawn_rate: float = 10,
              duration_s: int = 30, replace: bool = False) -> dict:
        """Start ``profile`` against ``sandbox`` (a Sandbox, or anything with ``id`` and
        ``proxy_url``, or a mapping with those keys); returns the run record.

        A sandbox has one run at a time: while one is sending, this refuses (TrafficError
        naming it), or with ``replace`` stops it and starts the new one."""
        sandbox_id, url = _sandbox_fields(sandbox)
        if profile not in PROFILES:
            raise TrafficError(f"unknown traffic profile {profile!r}; choose one of "
                               f"{', '.join(PROFILES)}", status=400, path="profile")
        problems = []
        if not isinstance(users, int) or not 1 <= users <= 5000:
            problems.append(("users", f"users must be 1-5000, got {users!r}"))
        if not isinstance(spawn_rate, (int, float)) or not 0 < spawn_rate <= 5000:
            problems.append(("spawn_rate", "spawn_rate must be above 0 and at most 5000, "
                             f"got {spawn_rate!r}"))
        if not isinstance(duration_s, int) or not 1 <= duration_s <= 3600:
            problems.append(("duration_s", "duration_s must be a whole number of seconds "
                             f"1-3600, got {duration_s!r}"))
        if problems:
            raise TrafficError("; ".join(m for _, m in problems),
                               [{"path": p, "message": m} for p, m in problems], status=400)
        with self._sandbox_lock(sandbox_id):
            busy = self.running_for(sandbox_id)
            if busy and not replace:
                r = busy[-1]
                left = max(0, round(r["started_at"] + r["duration_s"] - time.time()))
                raise TrafficError(
                    f"traffic run {r['run_id']} ({r['profile']}, {r['users']} users) is still "
                    f"sending to sandbox {sandbox_id} (about {left} s left): stop it first, "
                    "then start again (replace=True stops it for you)")
            for r in busy:
                self.stop(r["run_id"])
            return self._start(sandbox_id, url, profile, users, spawn_rate, duration_s)

    def _start(self, sandbox_id: str, url: str, profile: str, users: int, spawn_rate: float,
               duration_s: int) -> dict:
        running = [r for r in self._runs() if self._state(r) == "running"]
        if len(running) >= self.max_runs:
            raise TrafficError(f"{len(running)} traffic runs are going on, the most allowed "
                               f"(max_runs={self.max_runs}): stop one or wait for it to end")

        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        run_dir = self.dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        argv = locust_cmd(str(PROFILES[profile]), url, users, spawn_rate, duration_s,
                          str(run_dir / "locust"), locust=self.locust)
        rc_file = run_dir / "rc"
        # sh records locust's exit status; "$@" keeps every argument intact.
        wrapped = ["/bin/sh", "-c", 'rc_file=$1; shift; "$@"; echo $? > "$rc_file"', "sh",
                   str(rc_file), *argv]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(LOCUST_DIR), env.get("PYTHONPATH"))
                                            if p)
        proc = procs.spawn(wrapped, run_dir / "locust.log", cwd=REPO_ROOT, env=env)
        self._popens[run_id] = proc
        run = {
            "run_id": run_id, "sandbox_id": sandbox_id, "profile": profile, "host": url,
            "users": users, "spawn_rate": spawn_rate, "duration_s": duration_s,
            "pid": proc.pid, "pid_start": procs.start_ticks(proc.pid),
            "started_at": time.time(), "ended_at": None, "stopped": False,
            "dir": str(run_dir), "csv_prefix": str(run_dir / "locust"),
            "log": str(run_dir / "locust.log"), "command": argv,
        }
        self._write(run)
        return run

    # -- status ----------------------------------------------------------------------------

    def _alive(self, run: dict) -> bool:
        proc = self._popens.get(run["run_id"])
        if proc is not None:
            return proc.poll() is None
        return procs.pid_alive(run["pid"], run.get("pid_start"))

    def _rc(self, run: dict) -> int | None:
        try:
            return int((Path(run["dir"]) / "rc").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _state(self, run: dict) -> str:
        if self._alive(run):
            return "running"
        if run.get("stopped"):
            return "stopped"
        return "done" if self._rc(run) == 0 else "failed"

    def status(self, run_id: str) -> dict:
        """{"state": running|done|failed|stopped, "progress": 0..1, "stats": {...}, ...}."""
        run = self._read(run_id)
        state = self._state(run)
        if state != "running" and not run.get("ended_at"):
            rc_file = Path(run["dir"]) / "rc"
            run["ended_at"] = rc_file.stat().st_mtime if rc_file.exists() else time.time()
            self._write(run)
        stats = parse_stats(run["csv_prefix"])
        sending_at = run.get("sending_at") or _sending_since(run["csv_prefix"])
        if sending_at and not run.get("sending_at"):
            run["sending_at"] = sending_at
            self._write(run)
        elif not sending_at and stats["requests"]:
            # Requests counted but no history row yet: the stats file was written within
            # the last second of sending (an estimate, not stored).
            try:
                sending_at = os.stat(f"{run['csv_prefix']}_stats.csv").st_mtime - 1.0
            except FileNotFoundError:
                sending_at = None
        # From the first request on: locust's own start-up is not part of the run.
        since = sending_at or (run.get("ended_at") or time.time())
        elapsed = max(0.0, (run.get("ended_at") or time.time()) - since)
        progress = 1.0 if state == "done" else min(elapsed / run["duration_s"], 1.0)
        if state == "running":
            progress = min(progress, 0.99)
        out = {"run_id": run_id, "sandbox_id": run["sandbox_id"], "profile": run["profile"],
               "state": state, "progress": round(progress, 3), "elapsed_s": round(elapsed, 1),
               "sending": bool(sending_at) and state == "running",
               "users": run["users"], "duration_s": run["duration_s"],
               "stats": stats}
        if state == "failed":
            rc = self._rc(run)
            out["error"] = (f"locust exited with status {rc}" if rc is not None
                            else "locust ended without reporting a status") + \
                f"; last lines of {run['log']}:\n{procs.tail(Path(run['log']), 15)}"
        return out

    def stop_all(self, sandbox_id: str, grace: float = 10.0) -> list[dict]:
        """Stop every run of ``sandbox_id`` still going; their statuses (oldest first)."""
        return [self.stop(r["run_id"], grace) for r in self.running_for(sandbox_id)]

    def stop(self, run_id: str, grace: float = 10.0) -> dict:
        """Stop a run (locust writes its final numbers on SIGTERM); returns its status."""
        run = self._read(run_id)
        if self._alive(run):
            run["stopped"] = True
            self._write(run)
            # The wrapper's group holds sh and locust: signal only locust first so it can
            # write its final CSV while sh waits to record the exit status.
            for pid in procs.descendants(run["pid"]):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while self._alive(run) and time.monotonic() < deadline:
                time.sleep(0.1)
            procs.stop_groups([(run["pid"], run.get("pid_start"))], grace=2.0,
                              popens=[p for rid, p in self._popens.items() if rid == run_id])
        return self.status(run_id)

    def runs_for(self, sandbox_id: str) -> list[dict]:
        """Every run against ``sandbox_id``, oldest first, each as ``status`` returns it."""
        return [self.status(r["run_id"]) for r in self._runs() if r["sandbox_id"] == sandbox_id]

    def wait(self, run_id: str, timeout: float) -> dict:
        """Block until the run is no longer running (or ``timeout``); returns its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(run_id)
            if st["state"] != "running":
                return st
            time.sleep(0.2)
        return self.status(run_id)


def _sending_since(csv_prefix: str) -> float | None:
    """Wall time locust's test began, from its CSV history (one row per second, the first
    with requests in it), or None while nothing was sent yet."""
    try:
        with open(f"{csv_prefix}_stats_history.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("Name") != "Aggregated":
                    continue
                if int(_number(row, "Total Request Count") or 0) > 0:
                    ts = _number(row, "Timestamp")
                    # The row sums the second before its timestamp.
                    return ts - 1.0 if ts else None
    except FileNotFoundError:
        return None
    return None


def _sandbox_fields(sandbox) -> tuple[str, str]:
    if isinstance(sandbox, dict):
        sandbox_id, url = sandbox.get("id"), sandbox.get("proxy_url")
    else:
        sandbox_id, url = getattr(sandbox, "id", None), getattr(sandbox, "proxy_url", None)
    if not sandbox_id or not url:
        raise TrafficError("give a sandbox with an id and a proxy_url (labs.sandbox.Sandbox)",
                           status=400, path="sandbox")
    return str(sandbox_id), str(url)


def _number(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def parse_stats(csv_prefix: str) -> dict:
    """Numbers from locust's ``<prefix>_stats.csv``: totals ("Aggregated") and per name.

    {"requests", "failures", "rps", "p50", "p99", "avg_ms", "max_ms", "endpoints": [...]};
    zeros before the first request.
    """
    empty = {"requests": 0, "failures": 0, "rps": 0.0, "p50": None, "p99": None,
             "avg_ms": None, "max_ms": None, "endpoints": []}
    try:
        with open(f"{csv_prefix}_stats.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        return empty

    def pick(row: dict) -> dict:
        count = int(_number(row, "Request Count") or 0)
        return {"requests": count, "failures": int(_number(row, "Failure Count") or 0),
                "rps": round(_number(row, "Requests/s") or 0.0, 2),
                "p50": _number(row, "50%") if count else None,
                "p99": _number(row, "99%") if count else None,
                "avg_ms": round(_number(row, "Average Response Time") or 0.0, 2) if count else None,
                "max_ms": _number(row, "Max Response Time") if count else None}

    out = dict(empty)
    for row in rows:
        if row.get("Name") == "Aggregated":
            out.update(pick(row))
        elif row.get("Name"):
            out["endpoints"].append({"method": row.get("Type"), "name": row["Name"], **pick(row)})
    return out
