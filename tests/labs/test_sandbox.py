"""SandboxService with real processes: toy backends and the proxy on free loopback ports."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from labs.sandbox import (
    PortInUse,
    SandboxError,
    SandboxExists,
    SandboxLimit,
    SandboxNotFound,
    SandboxService,
    SandboxStartError,
)
from labs.sandbox import procs


START_TIMEOUT = 40.0  # generous: a loaded 2-core machine starts Python slowly


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains ``text`` (e.g. a test's tmp dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and procs.pid_alive(int(entry)):
            found.append((int(entry), cmdline))
    return found


def get(url: str, path: str = "/", timeout: float = 5.0) -> tuple[int, dict, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return procs.http_get(host, int(port), path, timeout)


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture
def service(tmp_path):
    svc = SandboxService(tmp_path / "state", max_sandboxes=3, start_timeout=START_TIMEOUT)
    yield svc
    for sb in svc.list():
        svc.stop(sb.id, grace=3.0)
    leftovers = processes_mentioning(str(tmp_path))
    assert not leftovers, f"processes left behind: {leftovers}"


def test_create_get_parts_measure_stop(service, tmp_path):
    sb = service.create("t1", backends=2)
    assert sb.id == "t1" and set(sb.backends) == {"b1", "b2"}
    assert sb.start_seconds is not None and sb.start_seconds > 0
    # The record on disk has what other processes need.
    record = json.loads((tmp_path / "state" / "sandboxes" / "t1.json").read_text())
    for key in ("id", "proxy_url", "admin_url", "backends", "ports", "pids", "config_path",
                "created_at", "last_used"):
        assert key in record
    assert service.get("t1").proxy_url == sb.proxy_url
    assert [s.id for s in service.list()] == ["t1"]
    parts = service.parts("t1")
    assert set(parts) == {"proxy", "b1", "b2"}
    assert all(p["alive"] for p in parts.values()), parts

    # Traffic through the proxy reaches the toy backends (once health checks pass).
    def served_by():
        status, headers, _ = get(sb.proxy_url, "/")
        return headers.get("x-backend") if status == 200 else None
    seen = {wait_until(served_by, what="a 200 through the proxy") for _ in range(6)}
    assert seen <= {"b1", "b2"} and seen
    assert get(sb.admin_url, "/healthz")[0] == 200

    usage = sb.measure()
    assert set(usage) == {"proxy", "b1", "b2", "total"}
    assert usage["total"] == sum(v for k, v in usage.items() if k != "total") > 0

    pids = dict(sb.pids)
    service.stop("t1")
    assert not (tmp_path / "state" / "sandboxes" / "t1.json").exists()
    assert not any(procs.pid_alive(pid) for pid in pids.values())
    with pytest.raises(SandboxNotFound):
        service.get("t1")


def test_looking_at_the_parts_sends_nothing_through_the_learners_proxy(service):
    """A dashboard asks for the parts' state every few seconds: an L4 listener must not see
    those looks as connections (its learner would watch phantom clients; a graded run would
    take one for its traffic's start)."""
    config = {"admin": {"listen": "127.0.0.1:1"},
              "listeners": {"game": {"bind": "127.0.0.1:1", "protocol": "tcp", "pool": "game"}},
              "pools": {"game": {"backends": [{"name": "b1", "address": "127.0.0.1:1"}]}}}
    service.create("l4", backends=["b1"], config=config)
    for _ in range(3):
        parts = service.parts("l4")
        assert parts["proxy"]["alive"] and "listening on" in parts["proxy"]["detail"], parts
    admin_url = service.get("l4").admin_url
    assert json.loads(get(admin_url, "/state")[2])["listeners"]["game"]["protocol"] == "tcp"
    metrics = get(admin_url, "/metrics")[2].decode()
    closed = [line for line in metrics.splitlines()
              if line.startswith("lblab_connections_total{") and not line.endswith(" 0.0")]
    assert closed == [], closed


def test_restart_backend_and_parts_report_a_dead_one(service):
    sb = service.create("t2", backends=2)
    old_pid, port = sb.pids["b1"], sb.ports["b1"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/_control/crash")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass  # it may die before answering
    finally:
        conn.close()
    # A dying process closes its sockets before its pid goes: the first "dead" answer may
    # still say "runs but ... refused"; the learner's last word is "not running".
    wait_until(lambda: "not running" in service.parts("t2")["b1"]["detail"],
               what="b1 reported not running")
    detail = service.parts("t2")["b1"]["detail"]
    assert "not running" in detail and "b1.log" in detail
    assert service.parts("t2")["b2"]["alive"]

    sb = service.restart_backend("t2", "b1")
    assert sb.pids["b1"] != old_pid and sb.ports["b1"] == port
    assert service.parts("t2")["b1"]["alive"]
    assert get(sb.backends["b1"], "/health/live")[0] == 200
    # Restarting a running backend replaces it too.
    again = service.restart_backend("t2", "b1")
    assert again.pids["b1"] != sb.pids["b1"] and service.parts("t2")["b1"]["alive"]
    with pytest.raises(SandboxError, match="no backend 'b9'"):
        service.restart_backend("t2", "b9")


def test_cap_existing_id_and_bad_input(service):
    service.create("c1", backends=1)
    with pytest.raises(SandboxExists, match="already running"):
        service.create("c1", backends=1)
    service.create("c2", backends=1)
    service.create("c3", backends=1)
    with pytest.raises(SandboxLimit, match="max_sandboxes=3"):
        service.create("c4", backends=1)
    with pytest.raises(SandboxError, match="sandbox id"):
        service.create("../etc", backends=1)
    with pytest.raises(SandboxError, match="unknown part"):
        service.create("c5", backends=1, ports={"b7": 1234})


def test_taken_port_is_refused_and_nothing_starts(service, tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} \\(proxy\\) is already in use"):
            service.create("p1", backends=1, ports={"proxy": port})
    assert service.list() == []
    assert not processes_mentioning(str(tmp_path))


def test_given_config_and_ports(service):
    from labs.backend.testing import free_port

    ports = {"proxy": free_port(), "b1": free_port()}
    config = {
        "listeners": {"web": {"bind": "127.0.0.1:1", "routes": ["all"]}},
        "routes": {"all": {"forward": "sticky"}},
        "pools": {"sticky": {
            "sticky": {"mode": "cookie", "cookie": "LBSTICKY"},
            "backends": [{"name": "b1", "address": "x:1"}, {"name": "b2", "address": "x:1"}],
        }},
    }
    sb = service.create("g1", backends=3, config=config, ports=ports)
    assert sb.ports["proxy"] == ports["proxy"] and sb.ports["b1"] == ports["b1"]
    text = Path(sb.config_path).read_text()
    assert f"127.0.0.1:{ports['b1']}" in text and f"127.0.0.1:{sb.ports['b2']}" in text
    assert "LBSTICKY" in text
    assert set(service.parts("g1")) == {"proxy", "b1", "b2", "b3"}  # b3 runs, outside the pool
    with pytest.raises(SandboxError, match="the proxy refuses this config"):
        service.create("g2", backends=1, config={"listeners": {"web": {
            "bind": "127.0.0.1:1", "routes": ["nope"]}}})


def test_a_part_that_does_not_come_up_is_named_with_its_log(service, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n"
                    'if [ "$2" = labs.backend ]; then echo "boom: no backend today" >&2; exit 3; fi\n'
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    broken = SandboxService(service.state_dir, python=str(fake), start_timeout=START_TIMEOUT)
    with pytest.raises(SandboxStartError) as info:
        broken.create("f1", backends=1)
    assert info.value.part == "b1"
    assert "boom: no backend today" in str(info.value) and "exited (status 3)" in str(info.value)
    assert service.list() == []
    assert not processes_mentioning(str(tmp_path / "state"))


def test_touch_and_reap_idle(service):
    old = service.create("r1", backends=1)
    service.create("r2", backends=1, pinned=True)
    time.sleep(1.2)
    fresh = service.create("r3", backends=1)
    assert service.touch("r3").last_used >= fresh.last_used
    assert service.reap_idle(1.0) == ["r1"]  # r2 is as old, but pinned
    assert {s.id for s in service.list()} == {"r2", "r3"}
    assert not procs.pid_alive(old.pids["proxy"])
    # A sandbox whose processes all died is reaped however fresh.
    for part, pid in fresh.pids.items():
        procs.signal_group(pid, signal.SIGKILL, fresh.pid_starts[part])
    wait_until(lambda: not any(service.get("r3").alive(p) for p in ("proxy", "b1")),
               what="r3's processes gone")
    assert service.reap_idle(3600) == ["r3"]
    assert [s.id for s in service.list()] == ["r2"]


def test_a_reaper_with_an_old_record_leaves_the_sandbox_started_since_under_its_id(service):
    """A learner's graded run stops their sandbox and starts it afresh under the same id;
    a reaper that judged the old record (dead, idle) acts on it only afterwards. It must
    stop nothing of the new one: not its processes, its record, its logs or its cgroups
    (./lab cohort at 20 learners lost a quarter of its runs to this)."""
    old = service.create("same", backends=1)
    service.stop("same", grace=2.0)  # what a graded run does before its own start
    new = service.create("same", backends=1)
    assert new.created_at != old.created_at

    service.stop("same", grace=2.0, created_at=old.created_at)  # the site's reap, late
    service._remove(old, grace=2.0)  # a stop that read the old record just before the restart

    current = service.get("same")
    assert current.created_at == new.created_at
    assert all(current.alive(p) for p in ("proxy", "b1"))
    assert Path(current.log_dir, "proxy.log").exists()
    wait_until(lambda: get(current.proxy_url)[0] == 200, what="the new proxy serving b1")
    service.stop("same", grace=2.0, created_at=new.created_at)  # the judged one: stopped
    assert service.list() == [] and not Path(current.log_dir).exists()
