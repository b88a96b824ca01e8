"""Nothing left behind: Ctrl-C on the launcher stops every process the lab started, and a
start after a crash stops what the crashed run left, by recorded pid and start time.

"Every process": the launcher's own parts and the default sandbox, plus what the site
starts while learners use it: a learner's sandbox, a graded lab run, the labs' Redis
(started here exactly as the site's services start and record them). Counted by pid
before and after.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from labs.framework import services
from labs.sandbox import SandboxService, procs
from tests.explainer.parts import free_port
from tests.labs.test_launcher import Lab


def launch(tmp_path) -> tuple[Lab, list[int]]:
    ports = [free_port() for _ in range(5)]
    lab = Lab([sys.executable, "-m", "labs.sandbox.launcher", "--no-migrate",
               "--port", str(ports[0]), "--proxy-port", str(ports[1]),
               "--admin-port", str(ports[2]), "--backend-ports", f"{ports[3]},{ports[4]}"],
              tmp_path)
    lab.wait_for(r"LBLab is running at", timeout=200)
    return lab, ports


def what_the_site_starts(state) -> dict[int, int]:
    """A learner's sandbox, a lab run's process and the labs' Redis: {pid: start ticks}."""
    svc = SandboxService(state)
    sb = svc.create("lab-0123456789ab", backends=2, owner="s:someone", timeout=30)
    run_dir = state / "labruns" / "run-1"
    run_dir.mkdir(parents=True)
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                           start_new_session=True)
    (run_dir / "pid.json").write_text(json.dumps({"pid": run.pid,
                                                  "pid_start": procs.start_ticks(run.pid)}))
    services.redis_url(state)
    redis = json.loads((state / "labs-redis.json").read_text())
    pids = {pid: sb.pid_starts[part] for part, pid in sb.pids.items()}
    pids[sb.preload_pid] = sb.preload_start
    pids[run.pid] = procs.start_ticks(run.pid)
    pids[redis["pid"]] = redis["pid_start"]
    threading_reaper(run)
    return pids


def threading_reaper(proc: subprocess.Popen) -> None:
    import threading

    threading.Thread(target=proc.wait, daemon=True).start()


def alive(pids: dict[int, int]) -> list[int]:
    return [pid for pid, ticks in pids.items() if procs.pid_alive(pid, ticks)]


@pytest.mark.timeout(300)
def test_ctrl_c_stops_every_process_the_lab_started(tmp_path):
    lab, ports = launch(tmp_path)
    try:
        own = {pid: procs.start_ticks(pid) for pid in procs.descendants(lab.proc.pid)}
        started = what_the_site_starts(lab.state_dir)
        before = alive({**own, **started})
        assert len(before) == len(own) + len(started) >= 10, before

        lab.proc.send_signal(signal.SIGINT)
        assert lab.proc.wait(60) == 0, lab.output
        lab._reader.join(5)
        after = alive({**own, **started})
        assert after == [], f"left behind: {after}\n{lab.output}"
        assert "stopped what the site had started" in lab.output
        assert "sandbox lab-0123456789ab" in lab.output and "labs' Redis" in lab.output
        assert SandboxService(lab.state_dir).list() == []
        assert all(procs.port_free("127.0.0.1", p) for p in ports)
    finally:
        lab.kill()


@pytest.mark.timeout(400)
def test_a_start_after_a_crash_stops_what_the_crashed_run_left(tmp_path):
    lab, _ = launch(tmp_path)
    started = what_the_site_starts(lab.state_dir)
    os.kill(lab.proc.pid, signal.SIGKILL)  # no cleanup at all
    lab.proc.wait(10)
    lab._reader.join(5)
    assert len(alive(started)) == len(started)  # the site's processes outlive it

    again, _ = launch(tmp_path)
    try:
        again.wait_for(r"an earlier run did not stop cleanly; stopped what it left", timeout=5)
        assert "sandbox lab-0123456789ab" in again.output
        assert alive(started) == []
        # An unrelated process is never touched: the test process itself still runs.
        assert procs.pid_alive(os.getpid())
    finally:
        again.kill()
    assert SandboxService(again.state_dir).list() == []
