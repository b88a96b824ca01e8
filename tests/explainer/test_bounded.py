"""Bounded: per-address rates for new sessions and sandbox starts, the cap, OS limits."""
from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest
from django.test import Client, RequestFactory

from explainer.middleware import render_problem
from labs.problems import LabFull, TooMany
from labs.sandbox import SandboxService
from labs.sandbox.limits import Limits, cgroup_of
from labs.services import rates
from labs.services import sandboxes as learner_sandboxes


def test_the_window_counts_per_period():
    ok, kept, _ = rates.window([], 100.0, 2, 60)
    assert ok and kept == [100.0]
    ok, kept, _ = rates.window([100.0], 110.0, 2, 60)
    assert ok and kept == [100.0, 110.0]
    ok, kept, wait = rates.window([100.0, 110.0], 120.0, 2, 60)
    assert not ok and wait == pytest.approx(40.0)
    ok, kept, _ = rates.window([100.0, 110.0], 161.0, 2, 60)  # the first left the window
    assert ok and kept == [110.0, 161.0]


@pytest.mark.parametrize("spec,rule", [("20/hour", (20, 3600.0)), ("5/10 minutes", (5, 600.0)),
                                       ("3/day", (3, 86400.0)), ("off", None), (None, None)])
def test_rates_are_written_n_per_period(spec, rule):
    assert rates.parse(spec) == rule


def test_a_bad_rate_says_how_to_write_one():
    with pytest.raises(ValueError, match="write N/period"):
        rates.parse("lots")


@pytest.fixture
def state(tmp_path, settings, monkeypatch):
    monkeypatch.setenv("LBLAB_STATE_DIR", str(tmp_path))
    settings.LBLAB_LABS_STATE_DIR = str(tmp_path)
    return tmp_path


def test_new_sessions_per_address_are_limited_with_a_429_that_says_when(state, settings, db):
    settings.LBLAB_RATE_SESSIONS = "2/hour"
    for _ in range(2):
        assert Client(REMOTE_ADDR="127.0.0.7").get("/labs/").status_code == 200
    resp = Client(REMOTE_ADDR="127.0.0.7").get("/labs/")
    assert resp.status_code == 429
    assert "Too many new learner sessions from your address (127.0.0.7)" in resp.content.decode()
    assert "at most 2 per hour" in resp.content.decode()
    assert 3000 < int(resp["Retry-After"]) <= 3600
    # another address, and a returning learner (who has a session), are not affected
    assert Client(REMOTE_ADDR="127.0.0.8").get("/labs/").status_code == 200
    returning = Client(REMOTE_ADDR="127.0.0.9")
    assert returning.get("/labs/").status_code == 200
    settings.LBLAB_RATE_SESSIONS = "0/hour"
    assert returning.get("/labs/").status_code == 200


def test_sandbox_starts_per_address_are_limited(state, settings):
    settings.LBLAB_RATE_STARTS = "1/hour"
    token = rates.current_client.set("127.0.0.20")
    started = []
    try:
        sb, fresh = learner_sandboxes.ensure("s:first", backends=1)
        started.append(sb.id)
        assert fresh
        with pytest.raises(TooMany) as info:
            learner_sandboxes.ensure("s:second", backends=1)
        assert info.value.status == 429 and "Too many sandbox starts" in info.value.message
        # reusing a running sandbox is not a start
        again, fresh = learner_sandboxes.ensure("s:first", backends=1)
        assert again.id == sb.id and fresh is False
    finally:
        rates.current_client.reset(token)
        for sid in started:
            learner_sandboxes.service().stop(sid, grace=2)


def test_a_full_lab_says_when_to_come_back(state, settings):
    settings.LBLAB_LABS_MAX_SANDBOXES = 0
    settings.LBLAB_LABS_IDLE_S = 600
    with pytest.raises(LabFull) as info:
        learner_sandboxes.ensure("s:someone", backends=1)
    assert info.value.status == 503
    assert "The lab is full" in info.value.message and "Try again in about 10 minutes" in \
        info.value.message
    page = render_problem(RequestFactory().get("/course/"), info.value)
    assert page.status_code == 503 and page["Retry-After"] == "600"
    assert "The lab is full" in page.content.decode() and "<h1>" in page.content.decode()
    api = render_problem(RequestFactory().post("/api/x/control/restart"), info.value)
    assert api.status_code == 503
    assert json.loads(api.content)["error"].startswith("The lab is full")


def test_each_sandbox_process_gets_os_limits(tmp_path):
    limits = Limits(memory_mb=300, cpu_weight=50, open_files=512, processes=40)
    svc = SandboxService(tmp_path, limits=limits)
    sb = svc.create("limited", backends=2, timeout=20)
    try:
        pids = [sb.pids["proxy"], sb.pids["b1"], sb.pids["b2"], sb.preload_pid]
        for pid in pids:
            text = Path(f"/proc/{pid}/limits").read_text()
            assert "Max open files            512                  512" in text, pid
        mode = limits.mode()
        if mode in ("v1", "v2"):
            for pid in pids:
                groups = cgroup_of(pid)
                assert any(path.endswith("/lblab-limited") for path in groups.values()), groups
            dirs = limits.cgroup_dirs("limited")
            if mode == "v1":
                memory, cpu, pids_dir = dirs
                assert (memory / "memory.limit_in_bytes").read_text().strip() == str(300 << 20)
                assert (cpu / "cpu.shares").read_text().strip() == "512"
                assert (pids_dir / "pids.max").read_text().strip() == "40"
        else:
            soft, _ = resource.prlimit(sb.pids["proxy"], resource.RLIMIT_AS)
            assert soft == 300 * 4 << 20
    finally:
        svc.stop("limited", grace=2)
    assert all(not d.exists() for d in limits.cgroup_dirs("limited"))


def test_without_cgroups_rlimits_and_a_lower_priority_bound_the_sandbox(tmp_path):
    import os

    limits = Limits(memory_mb=200, cpu_weight=50, open_files=256, cgroups="off")
    svc = SandboxService(tmp_path, limits=limits, preload_backends=False)
    sb = svc.create("rl", backends=1, timeout=20)
    try:
        pid = sb.pids["b1"]
        assert resource.prlimit(pid, resource.RLIMIT_NOFILE) == (256, 256)
        assert resource.prlimit(pid, resource.RLIMIT_AS)[0] == 800 << 20
        assert os.getpriority(os.PRIO_PROCESS, pid) > os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        svc.stop("rl", grace=2)


def test_the_sandbox_port_range_is_a_setting(state, settings):
    settings.LBLAB_SANDBOX_PORTS = (30600, 30699)  # this test's own block
    sb, _ = learner_sandboxes.ensure("s:ports", backends=2)
    try:
        assert all(30600 <= port <= 30699 for port in sb.ports.values()), sb.ports
    finally:
        learner_sandboxes.service().stop(sb.id, grace=2)


def test_the_client_address_is_the_last_forwarded_hop_only_when_trusted(settings):
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1",
                                   HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    settings.LBLAB_TRUST_FORWARDED = False
    assert rates.client_address(request) == "127.0.0.1"  # anyone can send that header
    settings.LBLAB_TRUST_FORWARDED = True
    assert rates.client_address(request) == "203.0.113.9"  # what LBLab's front door saw
