"""A lab's traffic: a headless locust process against the sandbox's proxy.

Same command line as labs.traffic (``labs.sandbox.commands.locust_cmd``) and the same CSV
parser (``labs.traffic.service.parse_stats``); what differs is that a lab needs two things
TrafficService does not offer: environment knobs for the profile (``LBLAB_UPLOAD_BYTES``,
``LBLAB_HEAVY_RPS``...) and locustfiles of its own in the lab folder (which import
labs/locust/lblab_common.py like the shared profiles). Locust is never imported here.

Users are spawned all at once unless the lab asks for a ramp (``spawn_rate``): a lab
measures a steady shape, not locust's ramp-up.
"""
from __future__ import annotations

import csv
import os
import subprocess
import time
from pathlib import Path

from labs.sandbox import procs
from labs.sandbox.commands import REPO_ROOT, local_executables, locust_cmd
from labs.traffic.service import LOCUST_DIR, parse_stats


class TrafficFailed(RuntimeError):
    pass


class LocustRun:
    def __init__(self, locustfile: Path, host_url: str, users: int, spawn_rate: float,
                 duration_s: float, run_dir: Path, env: dict[str, str] | None = None,
                 extra_path: Path | None = None):
        self.locustfile = Path(locustfile)
        self.host_url = host_url
        self.users = users
        self.spawn_rate = spawn_rate or users
        # locust's -t takes whole seconds; a lab asks for lab seconds (rounded up).
        self.duration_s = max(1, int(-(-duration_s // 1)))
        self.dir = Path(run_dir)
        self.env = env or {}
        self.extra_path = extra_path
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None

    @property
    def csv_prefix(self) -> str:
        return str(self.dir / "locust")

    @property
    def log_path(self) -> Path:
        return self.dir / "locust.log"

    def start(self) -> "LocustRun":
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = locust_cmd(str(self.locustfile), self.host_url, self.users, self.spawn_rate,
                          self.duration_s, self.csv_prefix, locust=local_executables()["locust"])
        env = dict(os.environ)
        # The repository too: a locustfile may use the runtime's own clients
        # (labs/traffic/grpc_client.py, labs/traffic/udp_client.py).
        paths = [str(LOCUST_DIR)] + ([str(self.extra_path)] if self.extra_path else []) \
            + [str(REPO_ROOT)]
        env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
        env.update(self.env)
        self.started_at = time.time()
        self.proc = procs.spawn(argv, self.log_path, cwd=REPO_ROOT, env=env)
        return self

    def spawning(self) -> bool:
        """Locust has started its users (its log says "Ramping to"): from here on a request
        is due at once. Before it, locust is still starting (imports, gevent), which takes
        seconds of CPU and far longer on a machine a whole cohort shares."""
        try:
            return "Ramping to" in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TrafficFailed(f"locust did not end within {timeout:g}s; log: {self.log_path}")
        self.ended_at = time.time()
        return rc

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            procs.stop_groups([(self.proc.pid, None)], grace=grace, popens=[self.proc])
        if self.ended_at is None:
            self.ended_at = time.time()

    def stats(self) -> dict:
        """parse_stats, plus ``errors``: locust's failure messages with their counts (what
        the clients saw: a refused certificate, a wrong server...)."""
        out = parse_stats(self.csv_prefix)
        errors = []
        try:
            with open(f"{self.csv_prefix}_failures.csv", newline="") as fh:
                for row in csv.DictReader(fh):
                    errors.append({"method": row.get("Method"), "name": row.get("Name"),
                                   "error": (row.get("Error") or "")[:500],
                                   "occurrences": int(row.get("Occurrences") or 0)})
        except (FileNotFoundError, ValueError):
            pass
        out["errors"] = errors
        return out

    def check(self) -> None:
        rc = self.proc.returncode if self.proc is not None else None
        if rc not in (0, None):
            raise TrafficFailed(f"locust exited with status {rc}; last lines of "
                                f"{self.log_path}:\n{procs.tail(self.log_path, 15)}")
