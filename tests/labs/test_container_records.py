"""The container driver's records (labs/sandbox/containers.py) when a sandbox is started
afresh under the same id while another site process still holds the old record: a graded
run does that to the learner's sandbox while their dashboard looks at it. No engine is
needed: the gateway and the records are the site's side."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from labs.sandbox import SandboxError, procs
from labs.sandbox.containers import ContainerDriver, ContainerSandbox


def record(driver: ContainerDriver, created_at: float, admin: int) -> ContainerSandbox:
    sb = ContainerSandbox(id="lab-same", host="127.0.0.1",
                          proxy_url=f"http://127.0.0.1:{admin + 1}",
                          admin_url=f"http://127.0.0.1:{admin}", backends={},
                          ports={"admin": admin, "proxy": admin + 1},
                          log_dir=str(driver.dir / "lab-same"), created_at=created_at,
                          status="running")
    (driver.dir / "lab-same" / "sock").mkdir(parents=True, exist_ok=True)
    with driver._lock():
        driver._write(sb)
    return sb


def gateways(sb) -> list[int]:
    """Gateway processes serving this sandbox's sockets."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"gateway" in cmd and f"{sb.log_dir}/sock".encode() in cmd:
            found.append(int(proc.name))
    return found


@pytest.fixture
def driver(tmp_path):
    drv = ContainerDriver(state_dir=tmp_path, port_range=(31800, 31899))
    yield drv
    for sb in drv.list():  # whatever gateway a failing check left, stopped
        for pid in gateways(sb):
            os.kill(pid, signal.SIGTERM)


def test_a_stale_record_neither_starts_a_gateway_nor_overwrites_the_new_one(driver):
    old = record(driver, 100.0, 31810)
    new = record(driver, 200.0, 31820)  # stopped and started again: new ports

    driver._ensure_gateway(old)  # what a dashboard's process holding `old` would do

    current = driver.get("lab-same")
    assert current.created_at == 200.0 and current.ports == new.ports
    assert "gateway" not in current.pids and "gateway" not in old.pids
    assert gateways(old) == []  # nothing serves the old ports


def test_the_current_record_gets_one_gateway_whoever_asks_first(driver):
    sb = record(driver, 300.0, 31830)
    try:
        driver._ensure_gateway(sb)
        first = driver.get("lab-same").pids["gateway"]
        assert procs.pid_alive(first) and sb.pids["gateway"] == first
        again = driver.get("lab-same")  # another process, its own copy of the record
        again.pids.pop("gateway")
        driver._ensure_gateway(again)
        assert driver.get("lab-same").pids["gateway"] == first
        assert gateways(sb) == [first]  # no second one started
    finally:
        current = driver.get("lab-same")
        procs.stop_groups([(current.pids["gateway"], current.pid_starts.get("gateway"))],
                          2.0, [])


def test_a_state_directory_too_deep_for_unix_sockets_is_refused_saying_so(tmp_path):
    deep = tmp_path / ("d" * 90)
    driver = ContainerDriver(state_dir=deep, port_range=(31800, 31899))
    with pytest.raises(SandboxError, match=r"too deep for a container sandbox's Unix sockets "
                                           r"\(.*control\.sock is \d+ bytes, 107 at most\)"):
        driver.create("lab-deep", backends=1)
