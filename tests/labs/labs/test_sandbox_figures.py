"""One sandbox's memory and start time, measured (reported, not asserted as speed)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labs.sandbox.commands import REPO_ROOT


@pytest.mark.timeout(120)
def test_measure_one_sandbox(tmp_path):
    out = subprocess.run([sys.executable, "manage.py", "labs", "measure", "--repeat", "2",
                          "--state-dir", str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    print("\nsandbox figures:", json.dumps(figures))
    assert figures["pss_mb"]["median"] > 0 and figures["start_seconds"]["median"] > 0
    assert set(figures["pss_mb_per_part"]) == {"proxy", "b1", "b2", "b3", "b4"}
    assert not list((tmp_path / "sandboxes").glob("*.json"))
