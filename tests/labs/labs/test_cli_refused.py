"""`manage.py labs run` with a config that cannot run: exit 2 and every problem with its path.

RunRefused is a Problem (labs/problems.py): the --json line is the Problem's own JSON, the
terminal lists "path: message" lines. Refused before any sandbox starts, so no process.
"""
import json

import pytest
from django.core.management import call_command

from labs.framework import registry


@pytest.fixture
def bad_config(tmp_path):
    text = registry.get("sticky-hot-spot").topology_text().replace(
        "algorithm: round_robin", "algorithm: round_robbin")
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


def test_a_refused_config_lists_its_paths(bad_config, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        call_command("labs", "run", "sticky-hot-spot", "--config", str(bad_config),
                     "--state-dir", str(tmp_path / "state"))
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "the config was refused:" in err
    assert "  pools.web.balancer.algorithm: unknown algorithm 'round_robbin'" in err


def test_a_refused_config_as_json(bad_config, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        call_command("labs", "run", "sticky-hot-spot", "--config", str(bad_config), "--json",
                     "--state-dir", str(tmp_path / "state"))
    assert done.value.code == 2
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["refused"] is True and out["ok"] is False and out["passed"] is False
    assert out["errors"][0]["path"] == "pools.web.balancer.algorithm"
    assert "round_robbin" in out["error"]
