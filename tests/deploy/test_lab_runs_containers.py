"""A graded lab run on the container driver (labs/framework/runner.py with
``RunOptions.driver``), against a real Docker engine: the lab's sandbox is a container, its
traffic enters through the container's gateway, and the grade is the one the process driver
gives (l4-path-routing: the starting config fails, the fix passes). Then, on the sandbox the
fix's run left running, what a run does to a sandbox's parts: each part's state for the
watchdog, a crash (kill_part) seen as a death, a backend and the proxy started again.
"""
from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from labs.framework import registry
from labs.framework.runner import RunOptions, run_lab
from labs.framework.watchdog import PartWatch
from labs.sandbox.containers import LABEL, ContainerDriver

PORTS = (31900, 31999)  # the gateways' loopback ports (tests pick within their own block)
SANDBOX = "lab-l4c"


def healthz(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.fixture
def state(engine):
    # Short: a sandbox's control socket lives under it, and a Unix socket's path may be
    # 107 bytes at most (pytest's tmp_path grows with every session's number).
    path = Path(tempfile.mkdtemp(prefix="lblab-lr-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def driver(engine, state):
    drv = ContainerDriver(state_dir=state, port_range=PORTS, docker_host=engine.host,
                          start_timeout=60)
    yield drv
    for sb in drv.list():
        drv.stop(sb.id)


def sandbox_containers(engine) -> list[str]:
    return engine.ids("ps", "-a", "--filter", f"label={LABEL}")


@pytest.mark.timeout(600)
def test_a_lab_run_on_containers_is_graded_as_on_processes(engine, driver, state):
    lab = registry.get("l4-path-routing")

    start = run_lab(lab, lab.topology_text(), RunOptions(
        state_dir=state, sandbox_id=SANDBOX, driver=driver, label="start"))
    assert start.result.graded and not start.result.passed, start.result.headline
    assert start.sandbox["placement"]["driver"] == "containers"
    assert start.recording.stats.get("requests", 0) > 0  # the traffic went through
    assert not any(e.startswith("NOTE") for e in start.result.evidence), start.result.evidence
    assert sandbox_containers(engine) == [] and driver.list() == []  # a throwaway's run: gone

    fix = run_lab(lab, lab.solution_text(), RunOptions(
        state_dir=state, sandbox_id=SANDBOX, driver=driver, label="solution",
        keep_sandbox=True))
    assert fix.result.passed, fix.result.headline + "\n" + "\n".join(fix.result.evidence)
    assert fix.sandbox["pss_bytes"]["total"] > 0  # the container's memory, from the engine
    report = (fix.run_dir / "report.html").read_text()
    assert f"Sandbox {SANDBOX} (containers)" in report
    print(f"l4-path-routing on containers: start {start.seconds:.1f} s, fix "
          f"{fix.seconds:.1f} s, sandbox start {fix.sandbox['start_seconds']} s, "
          f"{fix.sandbox['pss_bytes']['total'] / 1e6:.0f} MB")

    # The kept sandbox: every part runs, each with its own pid in the container.
    sb = driver.get(SANDBOX)
    before = driver.part_states(SANDBOX)
    assert set(before) == {"proxy", "b1", "b2", "b3", "b4"}
    assert all(running for _, running in before.values()), before
    assert len({pid for pid, _ in before.values()}) == 5

    # A crash of one backend: the watchdog sees that death and no other.
    watch = PartWatch({part: pid for part, (pid, _) in before.items()})
    driver.kill_part(SANDBOX, "b2")
    deaths = watch.check(1.0, driver.part_states(SANDBOX))
    assert [(d["part"], d["what"]) for d in deaths] == [
        ("b2", f"backend b2 (pid {before['b2'][0]}) stopped running")]

    # Started again: a new process; the others untouched.
    driver.restart_backend(SANDBOX, "b2")
    after = driver.part_states(SANDBOX)
    assert after["b2"][1] and after["b2"][0] != before["b2"][0]
    assert {p: s for p, s in after.items() if p != "b2"} == \
        {p: s for p, s in before.items() if p != "b2"}

    # The proxy killed (a balancer's crash), then started again from its config file.
    driver.kill_part(SANDBOX, "proxy")
    assert driver.part_states(SANDBOX)["proxy"] == (before["proxy"][0], False)
    assert healthz(sb.admin_url) is None
    driver.restart_proxy(SANDBOX)
    pid, running = driver.part_states(SANDBOX)["proxy"]
    assert running and pid != before["proxy"][0]
    assert healthz(sb.admin_url) == 200

    driver.stop(SANDBOX)
    assert sandbox_containers(engine) == []
