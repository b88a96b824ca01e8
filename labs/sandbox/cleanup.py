"""Nothing left behind: stop every process an LBLab installation started, by record.

Everything long-lived is recorded in the state directory with its pid *and* the kernel's
start time of that pid (procs.start_ticks), so a pid reused by an unrelated process is
never signalled, and nothing is ever looked up or killed by name:

    launcher/<sandbox>.json     the launcher's own parts (site, web, ws, bridge)
    sandboxes/<id>.json         every sandbox: proxy, toy backends, their fork parent
    labruns/<run>/pid.json      graded lab runs the site started (labs/services/runs.py)
    traffic/<run>.json          locust runs (labs/traffic)
    labs-redis.json             the labs' Redis (labs/framework/services.py)

``stop_everything`` is what Ctrl-C on ``./lab start`` ends with: after the site (so no
new sandbox can start), every run, every learner's sandbox, the labs' Redis.
``leftovers`` is what a start begins with: when the previous launcher of this state
directory is gone without cleaning up (SIGKILL, a crash, a power cut), whatever it
recorded that still runs is stopped the same way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from labs.sandbox import procs
from labs.sandbox.service import SandboxError, SandboxService


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def recorded_runs(state_dir: Path) -> list[tuple[int, int]]:
    """(pid, start ticks) of lab-run and traffic processes that still run."""
    found = []
    records = [*Path(state_dir).glob("labruns/*/pid.json"), *Path(state_dir).glob("traffic/*.json")]
    for path in records:
        data = _read(path) or {}
        pid, ticks = data.get("pid"), data.get("pid_start")
        if pid and ticks and procs.pid_alive(pid, ticks):
            found.append((pid, ticks))
    return found


def stop_everything(state_dir: Path, grace: float = 5.0,
                    say: Callable[[str], None] = lambda _: None) -> list[str]:
    """Stop runs, every sandbox and the labs' Redis recorded under ``state_dir``."""
    state_dir = Path(state_dir)
    stopped: list[str] = []
    runs = recorded_runs(state_dir)
    if runs:
        procs.stop_groups(runs, grace)
        stopped += [f"run pid {pid}" for pid, _ in runs]
    service = SandboxService(state_dir)
    for sb in service.list():
        try:
            service.stop(sb.id, grace=grace, keep_logs=True)
        except SandboxError as exc:  # stopped meanwhile, or a damaged record: say which
            say(f"sandbox {sb.id}: {exc}")
            continue
        stopped.append(f"sandbox {sb.id}")
    record = _read(state_dir / "labs-redis.json")
    if record is not None:
        procs.stop_groups([(record["pid"], record.get("pid_start"))], grace=2.0)
        (state_dir / "labs-redis.json").unlink(missing_ok=True)
        stopped.append("labs' Redis")
    return stopped


def leftovers(state_dir: Path, status_path: Path, grace: float = 5.0,
              say: Callable[[str], None] = lambda _: None) -> list[str]:
    """After a crash: stop what the previous launcher recorded (if it is gone)."""
    previous = _read(status_path)
    if previous is None:
        return []
    if procs.pid_alive(previous.get("pid"), previous.get("pid_start")):
        return []  # that launcher still runs: it is not ours to clean up
    parts = [(p["pid"], p["pid_start"]) for p in (previous.get("parts") or {}).values()
             if p.get("pid") and p.get("pid_start") and procs.pid_alive(p["pid"], p["pid_start"])]
    stopped = []
    if parts:
        procs.stop_groups(parts, grace)
        stopped += [f"site part pid {pid}" for pid, _ in parts]
    stopped += stop_everything(state_dir, grace, say)
    status_path.unlink(missing_ok=True)
    return stopped
