"""The container driver (labs/sandbox/containers.py) against a real Docker engine: a learner's
sandbox in its own container, reached only through loopback ports of its gateway, with no
network of its own beyond loopback and the engine's limits in force inside it."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from labs.sandbox import SandboxError
from labs.sandbox.containers import ContainerDriver, Limits, container_name

PORTS = (30720, 30779)  # this test's share of 30700-30799


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
def driver(engine, tmp_path):
    drv = ContainerDriver(state_dir=tmp_path, port_range=PORTS, docker_host=engine.host,
                          limits=Limits(memory_mb=160, cpus=0.5, pids=64), start_timeout=60)
    yield drv
    for sb in drv.list():
        drv.stop(sb.id)


@pytest.mark.timeout(900)
def test_a_sandbox_container_serves_is_confined_and_goes_away(engine, driver, tmp_path):
    sb = driver.create("learner-1", backends=3)
    print(f"container sandbox start: {sb.start_seconds} s")
    assert sb.proxy_url.startswith("http://127.0.0.1:") and sb.admin_url.startswith(
        "http://127.0.0.1:")
    assert {p["alive"] for p in driver.parts("learner-1").values()} == {True}

    # The site's view: the proxy balances over the three backends (once its first health
    # checks passed, as with the process driver); the admin API answers.
    deadline = time.monotonic() + 60
    while get_status(sb.proxy_url + "/") != 200:
        assert time.monotonic() < deadline, "the sandbox's proxy never served a request"
        time.sleep(0.5)
    seen = {get_json(sb.proxy_url + "/")["backend"] for _ in range(6)}
    assert seen == {"b1", "b2", "b3"}
    state = get_json(sb.admin_url + "/state")
    assert "pools" in json.dumps(state)

    # Inside: loopback only, no route anywhere, the engine's limits in force.
    code, out = driver.exec("learner-1", ["python", "-c", (
        "import socket, pathlib\n"
        "print(sorted(l.split(':')[0].strip() for l in "
        "pathlib.Path('/proc/net/dev').read_text().splitlines()[2:]))\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), 2)\n"
        "except OSError as exc:\n"
        "    print('unreachable', exc.errno)\n"
        "import urllib.request\n"
        f"print(urllib.request.urlopen('http://127.0.0.1:{sb.ports['proxy']}/', timeout=5)"
        ".status)\n")])  # its proxy listens inside on the gateway's port number
    assert code == 0, out
    lines = out.split("\n")
    assert lines[0] == "['lo']", out
    assert lines[1] == "unreachable 101", out  # ENETUNREACH: no interface, no route
    assert lines[2] == "200", out  # its own proxy, from inside its namespace
    code, out = driver.exec("learner-1", ["sh", "-c",
                                          "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                                          "/sys/fs/cgroup/pids/pids.max 2>/dev/null || "
                                          "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max"])
    assert out.split() == [str(160 * 1024 * 1024), "64"], out

    mem = driver.measure("learner-1")["total"]
    print(f"container sandbox memory (idle, 3 backends): {mem / 1e6:.1f} MB")
    assert 0 < mem < 160 * 1024 * 1024

    # A part the learner broke is restarted alone.
    driver.restart_backend("learner-1", "b2")
    assert driver.parts("learner-1")["b2"]["alive"]
    assert {get_json(sb.proxy_url + "/")["backend"] for _ in range(6)} == {"b1", "b2", "b3"}

    with pytest.raises(SandboxError, match="already running"):
        driver.create("learner-1")

    # Started afresh under the same id (as a graded run does), while a reaper that judged
    # the old record acts late: the new container, its record and its files stay.
    old = driver.get("learner-1")
    driver.stop("learner-1")
    sb = driver.create("learner-1", backends=3)
    driver.stop("learner-1", created_at=old.created_at)
    driver._remove(old)  # a stop that read the old record just before the restart
    assert driver.get("learner-1").created_at == sb.created_at
    assert {p["alive"] for p in driver.parts("learner-1").values()} == {True}
    assert get_json(sb.admin_url + "/state")

    gateway = sb.pids["gateway"]
    driver.stop("learner-1")
    assert engine.docker("ps", "-a", "-q", "--filter", f"name={container_name('learner-1')}"
                         ).stdout.strip() == ""
    assert not (tmp_path / "containers" / "learner-1").exists()
    assert not driver.list()
    with pytest.raises(OSError):
        urllib.request.urlopen(sb.admin_url + "/healthz", timeout=2)
    from labs.sandbox import procs
    assert not procs.pid_alive(gateway)
