"""`python -m proxy`: --check output and exit codes, startup errors, clean stop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

from tests.proxy.e2e.support import REPO, ProxyProcess, base_config, request

pytestmark = pytest.mark.timeout(60)


def run_proxy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


BAD = textwrap.dedent("""
    listeners:
      web:
        bind: 127.0.0.1:0
        routes: [main]
        timeouts: {client_header: 10}
      raw:
        bind: 127.0.0.1:0
        protocol: tcp
        pool: sticky
    routes:
      main: {forward: nowhere}
    pools:
      sticky:
        sticky: {mode: cookie}
        backends: [{name: a, address: "127.0.0.1:9001"}]
        colour: blue
""")


def test_check_reports_every_error_with_its_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = run_proxy("--check", str(path))
    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    text = result.stdout
    assert any(l.startswith("pools.sticky.colour: unknown key") for l in lines), text
    assert any(l.startswith("listeners.web.timeouts.client_header:") and "unit" in l
               for l in lines), text
    # cross-object problems are found once the objects themselves are valid
    path.write_text(BAD.replace("    colour: blue\n", "").replace("{client_header: 10}",
                                                                    "{client_header: 10s}"))
    result = run_proxy("--check", str(path))
    assert result.returncode == 2
    text = result.stdout
    assert "routes.main: no pool named 'nowhere'" in text
    assert "pools.sticky.sticky.mode: sticky mode cookie needs HTTP cookies, and pool sticky is behind tcp listener raw" in text


def test_check_ok(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(base_config({"p": {"backends": []}})))
    result = run_proxy("--check", str(path))
    assert result.returncode == 0 and result.stdout.strip() == "ok"


def test_check_shipped_example():
    result = run_proxy("--check", str(REPO / "proxy" / "examples" / "default.yaml"))
    assert result.returncode == 0, result.stdout


def test_port_in_use_is_a_clear_startup_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        config = base_config({"p": {"backends": []}})
        config["listeners"]["web"]["bind"] = f"127.0.0.1:{port}"
        path = tmp_path / "busy.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run_proxy("--config", str(path))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "listeners.web.bind" in result.stderr


def test_refused_config_at_startup_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = run_proxy("--config", str(path))
    assert result.returncode == 2
    assert "pools.sticky.colour" in result.stderr


def test_sigterm_stops_cleanly(tmp_path, backends):
    config = base_config({"p": {"backends": [
        {"name": "b1", "address": f"127.0.0.1:{backends['b1'].port}"}]}})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = ProxyProcess(path, tmp_path / "access.log").wait_ready()
    try:
        assert request(proc.port(), path="/x").status == 200
        proc.process.send_signal(signal.SIGTERM)
        assert proc.process.wait(15) == 0
        assert "lblab proxy stopped" in proc.output()
    finally:
        proc.stop()
