"""A run during which part of the sandbox dies is never graded as if it were normal.

The watchdog's bookkeeping is checked on plain data; then a real run of the lying
health-check lab has its proxy killed (SIGKILL) midway: the result must say the run can't
be graded, name the proxy and when it died, and the CLI's exit status must be 3.
"""
from __future__ import annotations

import html
import os
import signal
import threading
import time

import pytest

from labs.framework import registry
from labs.framework.runner import RunOptions, run_lab
from labs.framework.watchdog import PartWatch
from labs.sandbox import SandboxNotFound, SandboxService


def test_watch_reports_unplanned_deaths_only():
    watch = PartWatch({"proxy": 10, "b1": 11, "b2": 12})
    assert watch.check(0.5, {"proxy": (10, True), "b1": (11, True), "b2": (12, True)}) == []
    watch.expect("b2")  # the lab restarts b2: planned
    assert watch.check(1.0, {"proxy": (10, True), "b1": (11, True), "b2": (None, False)}) == []
    watch.settled("b2", 22)
    deaths = watch.check(1.5, {"proxy": (10, False), "b1": (31, True), "b2": (22, True)})
    assert [(d["t"], d["part"]) for d in deaths] == [(1.5, "proxy"), (1.5, "b1")]
    assert deaths[0]["what"] == "the proxy (pid 10) stopped running"
    assert "died and was started again as pid 31" in deaths[1]["what"]
    # Reported once, not at every check while it stays down.
    assert watch.check(2.0, {"proxy": (10, False), "b1": (31, True), "b2": (22, True)}) == []
    assert len(watch.deaths) == 2


@pytest.mark.timeout(180)
def test_a_run_whose_proxy_is_killed_midway_cannot_be_graded(tmp_path):
    lab = registry.get("lying-health-check")
    sandbox_id = "lab-killed-proxy"
    phases: list[str] = []
    killed: dict = {}

    def progress(status):
        phases.append(status["phase"])

    def killer():
        svc = SandboxService(tmp_path)
        deadline = time.monotonic() + 90
        while "traffic" not in phases or len([p for p in phases if p == "traffic"]) < 6:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        try:
            pid = svc.get(sandbox_id).pids["proxy"]
        except SandboxNotFound:
            return
        os.kill(pid, signal.SIGKILL)  # the proxy this test's run started
        killed["pid"] = pid

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    outcome = run_lab(lab, lab.solution_text(),
                      RunOptions(state_dir=tmp_path, sandbox_id=sandbox_id, progress=progress))
    th.join(5)
    assert killed, "the proxy was not killed (the run never reached its traffic)"
    r = outcome.result
    assert r.graded is False and r.passed is False
    assert r.headline.startswith("This run can't be graded: the proxy "), r.headline
    assert f"pid {killed['pid']}" in r.headline
    assert "requests failed" not in r.headline
    broken = [e for e in r.evidence if e.startswith("BROKEN")]
    assert broken and "the proxy" in broken[0] and "s (" in broken[0]  # when, in both times
    report = html.unescape((outcome.run_dir / "report.html").read_text())
    assert "<title>The lying health check: CAN'T GRADE</title>" in report
    assert "This run can't be graded: the proxy " in report
    assert outcome.to_json()["graded"] is False


def test_a_recording_with_a_death_gets_no_verdict_whatever_its_numbers():
    from labs.framework.recording import Recording
    from labs.framework.runner import grade

    lab = registry.get("lying-health-check")
    run = Recording(slug=lab.slug, time_scale=10, t0=0.0, duration=6, config={},
                    events=[], broken=[
                        {"t": 2.5, "part": "event stream", "what": "the proxy's event stream "
                         "ended (the proxy closed it); nothing after it was recorded"},
                        {"t": 2.5, "part": "traffic", "what": "the traffic generator (locust) "
                         "exited with status 1"},
                    ])
    result = grade(lab, run)  # no request failed at all: still not a pass
    assert result.graded is False and result.passed is False
    assert result.headline.startswith("This run can't be graded: the proxy's event stream")
    assert "2.5 s (25 s prod)" in result.headline and "(and 1 more)" in result.headline
    assert [e.split(":")[0] for e in result.evidence[:2]] == ["BROKEN  at 2.5 s (25 s prod)"] * 2
