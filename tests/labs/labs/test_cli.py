"""python manage.py labs ...: the terminal face of the same runner (workshops, CI)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labs.framework import registry
from labs.sandbox.commands import REPO_ROOT


def labs(*args, state=None, timeout=120):
    argv = [sys.executable, "manage.py", "labs", *args]
    if state is not None and args[0] == "run":
        argv += ["--state-dir", str(state)]
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def test_list_and_check():
    out = labs("list")
    assert out.returncode == 0, out.stderr
    for lab in registry.all_labs():
        assert lab.slug in out.stdout
    assert "1:10" in out.stdout
    check = labs("check")
    assert check.returncode == 0 and "all complete" in check.stdout


def test_refused_config_exits_2_with_paths(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((registry.get("lying-health-check").topology_text()
                    .replace("interval: 300ms", "interval: soon")))
    out = labs("run", "lying-health-check", "--config", str(bad), state=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "pools.web.health.interval: bad duration 'soon'" in out.stderr
    assert not (tmp_path / "sandboxes").exists() or not list((tmp_path / "sandboxes").glob("*.json"))
    out = labs("run", "no-such-lab")
    assert out.returncode != 0 and "no lab 'no-such-lab'" in out.stderr


@pytest.mark.timeout(240)
def test_run_exits_0_only_when_the_grader_passes(tmp_path):
    fail = labs("run", "lying-health-check", "--json", state=tmp_path)
    assert fail.returncode == 1, fail.stderr[-2000:]
    data = json.loads(fail.stdout)
    assert data["passed"] is False and data["label"] == "start"
    assert "target is at most 15" in " ".join(data["result"]["evidence"])
    report = tmp_path / "report"
    ok = labs("run", "lying-health-check", "--solution", "--report", str(report), state=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert ok.stdout.startswith("PASS")
    html = (report / "report.html").read_text()
    assert "PASS" in html and "sequenceDiagram" in html and "<svg" in html
    assert json.loads((report / "report.json").read_text())["passed"] is True
    # throwaway sandboxes are gone afterwards
    assert not list((tmp_path / "sandboxes").glob("*.json"))
