"""A lab with several balancers, for real: one balancer killed and started again mid-run,
another stopped gracefully.

The run goes on; the restarted balancer gets the learner's config back (its listener
routes again), its new event stream is recorded under its name, and the watchdog knows
both changes were planned (the run is graded, not "broken")."""
from __future__ import annotations

import pytest

from labs.framework import definition
from labs.framework.runner import RunOptions, run_lab
from tests.labs.labs.test_definition import copy_lab

LAB = """
title: Kill and restart one balancer
concept: A test of proxy faults
story: Three balancers share two backends; lb2 dies and comes back.
sandbox: {backends: 2, proxies: [lb1, lb2, lb3]}
traffic: {locustfile: traffic.py, users: 6, duration: 8s, env: {LBLAB_WORK_MS: "5"}}
faults:
  - {at: 0.8s, proxy: lb2, crash: true, label: lb2 dies}
  - {at: 1.2s, proxy: lb2, restart: {}, label: lb2 restarts}
  - {at: 2s, proxy: lb3, stop: true, label: lb3 stops}
steps: [{title: Run, text: run it}]
task: Nothing to reach here.
"""

GRADER = '''
from labs.framework.grading import Result, backend_chart


def grade(run):
    return Result(passed=True, headline="recorded", evidence=["PASS  1 run"],
                  chart=backend_chart(run, ["b1", "b2"]))
'''


@pytest.mark.timeout(300)
def test_a_killed_balancer_comes_back_with_the_config_and_its_events(tmp_path):
    folder = copy_lab(tmp_path, "p2c-herding")
    (folder / "lab.yaml").write_text(LAB)
    (folder / "grader.py").write_text(GRADER)
    for name in ("topology.yaml", "solution.yaml"):
        text = (folder / name).read_text()
        (folder / name).write_text(text.replace(
            "      - {name: b3, address: 127.0.0.1:9003}\n", "").replace(
            "      - {name: b4, address: 127.0.0.1:9004}\n", "").replace(
            "      - {name: b5, address: 127.0.0.1:9005}\n", ""))
    lab, problems = definition.load(folder)
    assert lab is not None, problems
    outcome = run_lab(lab, lab.topology_text(), RunOptions(state_dir=tmp_path / "state"))
    rec = outcome.recording
    assert not rec.broken and outcome.result.graded, rec.broken
    marks = [m["what"] for m in rec.timeline if m["kind"] == "fault"]
    assert "lb2: balancer process killed (SIGKILL)" in marks
    assert "lb2: up again with your config" in marks
    assert "lb3: balancer exited" in marks  # a graceful stop, planned: not "broken"
    back = next(m["t"] for m in rec.timeline if m["what"] == "lb2: up again with your config")
    # A Python proxy takes a few seconds to start on a loaded machine: the 8 s of traffic
    # leave room for it (this is not a timing assertion, only the window to look in).
    assert back < rec.traffic["ended_at"] - 1, f"lb2 came back at {back} only"
    by_proxy = {p: [e for e in rec.requests() if e.get("proxy") == p and e.get("backend")]
                for p in ("lb1", "lb2", "lb3")}
    assert all(by_proxy.values())
    # Its requests after the restart went through the learner's config (pool web, b1/b2).
    assert any(e["t"] > back and e["backend"] in ("b1", "b2") for e in by_proxy["lb2"])
    # Clients of lb2 saw it gone in between: the other balancers' streams went on.
    assert any(0.8 < e["t"] < back for e in by_proxy["lb1"])
