"""compose.yml deployed as a Swarm stack on a single-node swarm (``docker swarm init
--advertise-addr 127.0.0.1``), with the test override's loopback ports and compose.swarm.yml
(the site on the manager's host network), merged into one stack file by
docker/stackfile.py: the stack's services converge, the front door
serves the dashboard and the site answers healthy; then the stack, the swarm and everything
they made are gone."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from docker import stackfile

REPO = Path(__file__).resolve().parents[2]
STACK = "lblabswarm"
FILES = ["compose.yml", "compose.hostnet.yml", "compose.swarm.yml"]


def status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_until(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")


@pytest.mark.timeout(1200)
def test_the_compose_file_deploys_as_a_swarm_stack(engine, tmp_path):
    stack_file = tmp_path / "stack.yml"
    stack_file.write_text(stackfile.dump(stackfile.stack([REPO / name for name in FILES])))
    engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
    try:
        engine.docker("stack", "deploy", "-c", str(stack_file), STACK, timeout=300)
        services = engine.docker("stack", "services", STACK, "--format",
                                 "{{.Name}} {{.Replicas}}").stdout.split("\n")
        names = {line.split()[0].removeprefix(f"{STACK}_") for line in services if line}
        assert {"proxy", "web", "ws1", "ws2", "postgres", "redis", "migrate"} <= names

        def converged():
            rows = engine.docker("stack", "services", STACK, "--format",
                                 "{{.Name}} {{.Replicas}}").stdout.split()
            pairs = dict(zip(rows[::2], rows[1::2]))
            running = {k: v for k, v in pairs.items() if not k.endswith("_migrate")}
            return all(v.split("/")[0] == v.split("/")[1] for v in running.values()) and pairs

        try:
            wait_until("every service of the stack running", converged, timeout=600)
        except AssertionError as exc:
            tasks = engine.docker("stack", "ps", STACK, "--no-trunc", "--format",
                                  "{{.Name}} {{.CurrentState}} {{.Error}}", check=False).stdout
            raise AssertionError(f"{exc}\n{tasks}") from None
        wait_until("the site healthy behind the stack's front door",
                   lambda: status("http://127.0.0.1:30700/healthz") == 200, timeout=300)
        assert status("http://127.0.0.1:30700/") == 200
        health = urllib.request.urlopen("http://127.0.0.1:30702/healthz", timeout=30).read()
        assert health == b"ok\n"
    finally:
        engine.docker("stack", "rm", STACK, check=False, timeout=120)
        wait_until("the stack's containers gone",
                   lambda: not engine.ids("ps", "-a", "--filter",
                                          f"label=com.docker.stack.namespace={STACK}"),
                   timeout=120)
        engine.docker("swarm", "leave", "--force", check=False, timeout=120)
        for volume in engine.ids("volume", "ls", "--filter", f"label=com.docker.stack.namespace={STACK}"):
            engine.docker("volume", "rm", "-f", volume, check=False)
    left = engine.inventory()
    assert left == {"containers": [], "services": [], "networks": [], "volumes": []}, left
