"""A window of a real sandbox's traffic, captured like the dashboard does and replayed.

Real parts: a learner-like sandbox (proxy + three toy backends) with a slow b3, real HTTP
requests through its proxy, a fault change logged the way the dashboard's controls log it,
then three replay sandboxes at once (round robin, and random twice under one seed).
"""
from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from labs.framework import replay, replay_trace, replay_window
from labs.framework.replay_trace import TraceError
from labs.sandbox import SandboxService
from labs.sandbox.admin_client import AdminClient, BackendControl
from labs.sandbox.topology import default_config

N = 60
BACKENDS = ["b1", "b2", "b3"]


def send(url: str, n: int, per_second: float) -> list[int]:
    """n GET requests, open loop at a steady rate (a thread each, like many users)."""
    def one(i: int) -> int:
        time.sleep(max(0.0, start + i / per_second - time.time()))
        with urllib.request.urlopen(f"{url}/work?ms={1 + i % 3}", timeout=10) as resp:
            resp.read()
            return resp.status

    start = time.time()
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(n)))


def wait_ready(admin_url: str, deadline_s: float = 20.0) -> None:
    """Until every backend is eligible (the health checker's first passes)."""
    admin = AdminClient(admin_url)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        backends = [b for pool in admin.state()["pools"].values() for b in pool["backends"]]
        if backends and all(b["eligible"] for b in backends):
            return
        time.sleep(0.1)
    raise AssertionError(f"backends not eligible after {deadline_s} s: {backends}")


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    state = tmp_path_factory.mktemp("window-state")
    svc = SandboxService(state_dir=state)
    sb = svc.create("win-src", backends=BACKENDS, config=default_config(BACKENDS), timeout=20)
    try:
        quiet = None
        try:
            replay_window.capture(admin_url=sb.admin_url, backend_urls=sb.backends,
                                  seconds=10, state_dir=state, sandbox_id=sb.id)
        except TraceError as exc:
            quiet = str(exc)
        wait_ready(sb.admin_url)
        # Fault changes the dashboard makes: its controls log each one like this.
        answer = BackendControl(sb.backends["b3"]).set_faults({"latency_ms": 60})
        replay_window.log_fault(state, sb.id, "b3", answer["faults"])
        statuses = send(sb.proxy_url, N // 2, 30.0)
        answer = BackendControl(sb.backends["b3"]).clear_faults()
        replay_window.log_fault(state, sb.id, "b3", answer["faults"])
        statuses += send(sb.proxy_url, N // 2, 30.0)
        folder = replay_window.capture(admin_url=sb.admin_url, backend_urls=sb.backends,
                                       seconds=30, state_dir=state, sandbox_id=sb.id)
    finally:
        svc.stop(sb.id, grace=2)
    yield quiet, statuses, folder, state


@pytest.fixture(scope="module")
def replayed(captured):
    _, _, folder, state = captured
    trace = replay_trace.for_run(folder)
    out = replay.replay_dir(folder)
    result = replay.Replayer(trace, ["round_robin", "random", "random"], state_dir=state,
                             out_dir=out, labels=["rr", "random#1", "random#2"]).run()
    return trace, result


def test_a_quiet_sandbox_is_refused_with_what_to_do(captured):
    quiet, _, _, _ = captured
    assert quiet is not None and "saw 0 HTTP requests" in quiet and "traffic panel" in quiet


def test_the_window_holds_the_requests_and_the_fault_schedule(captured):
    _, statuses, folder, state = captured
    assert statuses == [200] * N
    assert folder.parent == state / "windows" / "win-src"
    trace = replay_trace.load(folder / "trace.jsonl")
    assert (trace.source, trace.sandbox, trace.backends) == ("dashboard", "win-src", BACKENDS)
    assert len(trace.requests) == N
    assert sorted({r["path"] for r in trace.requests}) == ["/work?ms=1", "/work?ms=2",
                                                             "/work?ms=3"]
    assert {r["recorded"]["backend"] for r in trace.requests} == set(BACKENDS)
    # b3 was slow from before the first request until the logged clear: the replay sets
    # it at lab second 0 and clears it (its whole knob set after the change) at its second.
    lines = [f for f in trace.faults if f.get("backend") == "b3"]
    assert lines[0] == {"kind": "fault", "t": 0.0, "backend": "b3", "set": {"latency_ms": 60}}
    assert len(lines) == 2 and lines[1]["clear"] and lines[1]["set"] == {}
    assert 0.5 < lines[1]["t"] < trace.end
    slow = [r for r in trace.requests if r["recorded"]["faults"]]
    assert slow and all(r["recorded"]["backend"] == "b3" and r["t"] < lines[1]["t"]
                        for r in slow)


def test_the_window_replays_in_every_lane_and_seeded_random_repeats(replayed):
    trace, result = replayed
    lanes = {lane["label"]: lane for lane in result["lanes"]}
    for lane in lanes.values():
        assert (lane["sent"], lane["answered"], lane["errors"]) == (N, N, 0), lane
        applied = [(f["backend"], f.get("error")) for f in lane["faults_applied"]]
        assert applied == [("b3", None), ("b3", None)]
    assert lanes["rr"]["per_backend"] == {"b1": 20, "b2": 20, "b3": 20}
    # One seed for the replay: both random lanes drew the same sequence, so each backend
    # got the same number of requests (which request got which can swap when two arrive
    # within a millisecond).
    assert lanes["random#1"]["per_backend"] == lanes["random#2"]["per_backend"]
    (rep,) = result["repeats"]
    assert rep["counts_equal"] and rep["errors_diff"] == 0
    assert result["seed"] == replay.trace_seed(trace) and result["source"] == "dashboard"
