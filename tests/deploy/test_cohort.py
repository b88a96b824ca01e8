"""``./lab cohort`` on the Docker engine at a small N, as a user runs it: compose.yml up with
learners' sandboxes as containers, learners through the real site over HTTP and WebSocket, every lab run graded as expected,
then nothing left behind.

The cohort starts and stops its own engine (docker/engine.py, the same data root and image
cache as the other deployment tests, which its lock serialises). Figures (lab p95, memory)
are printed, never asserted: speed goes in the closing notes, not in tests.

``--engine swarm`` runs the same learners against the Swarm stack (``run_cohort("swarm",
...)`` passes here in about a minute); the suite leaves it out to stay short, since
test_swarm.py already deploys the stack and takes a learner through its site, and
test_cohort_swarm_specs.py checks the stack the cohort writes.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from docker.engine import RUN_ROOT
from labs.cohort.deploy import PROJECT, processes_mentioning

REPO = Path(__file__).resolve().parents[2]
LEARNERS = 2


def run_cohort(engine: str, timeout: float) -> None:
    proc = subprocess.run([sys.executable, "-m", "labs.cohort", "--learners", str(LEARNERS),
                           "--engine", engine], cwd=REPO, text=True, capture_output=True,
                          timeout=timeout)
    print(proc.stdout)
    print(proc.stderr[-3000:], file=sys.stderr)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output (exit {proc.returncode}): {proc.stderr[-2000:]}"
    out = json.loads(lines[-1])
    assert out["error_samples"] == [] and out["errors"] == 0
    assert out["engine"] == engine and out["learners"] == LEARNERS
    assert out["runs"] == 2 * LEARNERS
    assert out["graded_as_expected"] == out["runs"]
    assert out["dashboards_live"] == LEARNERS  # each saw a request of its own live
    assert out["left_behind"] == []
    assert out["sandbox_mem_mb"] and out["sandbox_start_p95_s"]
    assert proc.returncode == 0
    # The table came before the JSON line, one row per learner.
    assert sum(1 for line in lines if line.startswith("learner-")) == LEARNERS
    # Nothing of the engine or the deployment runs any more.
    assert processes_mentioning([f"{RUN_ROOT}/", PROJECT]) == []


@pytest.mark.timeout(900)
def test_a_small_cohort_on_docker_is_graded_as_expected_and_leaves_nothing():
    run_cohort("docker", timeout=880)
