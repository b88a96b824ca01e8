"""Building a replayable trace from a dashboard window: pure, on hand-made proxy events."""
from __future__ import annotations

import pytest

from labs.backend.faults import DEFAULTS
from labs.framework import replay, replay_trace
from labs.framework.replay_window import (MAX_REQUESTS, MIN_REQUESTS, check_window,
                                          fault_schedule, log_fault, read_fault_log,
                                          window_dir, window_trace)
from labs.framework.replay_trace import TraceError

NOW = 1_000_000.0
CONFIG = {"admin": {"listen": "127.0.0.1:9900"},
          "listeners": {"main": {"bind": "127.0.0.1:8080", "protocol": "http"}},
          "pools": {"web": {"balancer": {"algorithm": "round_robin"},
                            "backends": [{"name": "b1", "address": "127.0.0.1:9001"},
                                         {"name": "b2", "address": "127.0.0.1:9002"},
                                         {"name": "extra", "address": "10.1.2.3:80"}]}}}


def event(i: int, start: float, backend: str = "b1", latency_ms: float = 20.0, **more) -> dict:
    return {"type": "request", "request_id": f"r-{i}", "ts": start + latency_ms / 1000,
            "latency_ms": latency_ms, "method": "GET", "path": f"/work?ms={i % 3}",
            "bytes_in": 0, "bytes_out": 10, "backend": backend, "status": 200,
            "termination": "--", "timings": {"connected": 1.0, "done": 15.5}, **more}


def build(events, seconds=30, log=(), faults_now=None):
    return window_trace(events, now=NOW, seconds=seconds, config=CONFIG,
                        backends=["b1", "b2"],
                        faults_now=faults_now or {"b1": dict(DEFAULTS), "b2": dict(DEFAULTS)},
                        fault_log=list(log), defaults=DEFAULTS, sandbox_id="lab-abc",
                        window_id="20261206-060000-abcdef")


def test_requests_that_started_in_the_window_become_the_trace_in_arrival_order():
    inside = [event(i, NOW - 25 + i * 0.5, "b1" if i % 2 else "b2") for i in range(30)]
    before = [event(100, NOW - 40), event(101, NOW - 30.5)]
    l4 = [{**event(102, NOW - 10), "path": None}]  # an L4 connection: no path
    trace = build(list(reversed(inside)) + before + l4)
    assert len(trace.requests) == 30
    assert trace.requests[0]["t"] == 0.0 and trace.requests[1]["t"] == 0.5
    assert [r["i"] for r in trace.requests] == list(range(30))
    first = trace.requests[0]
    assert (first["method"], first["path"], first["seed"]) == ("GET", "/work?ms=0", 0)
    assert first["recorded"] == {"backend": "b2", "status": 200, "latency_ms": 20.0,
                                 "backend_ms": 14.5, "termination": "--", "faults": {}}
    assert (trace.source, trace.sandbox, trace.slug) == ("dashboard", "lab-abc", "dashboard")
    assert trace.algorithm == "round_robin" and trace.backends == ["b1", "b2"]


def test_a_backend_outside_the_sandbox_is_left_out_and_said_so():
    trace = build([event(i, NOW - 20 + i * 0.1) for i in range(MIN_REQUESTS)])
    names = [b["name"] for b in trace.config["pools"]["web"]["backends"]]
    assert names == ["b1", "b2"]
    assert any("extra" in n and "left out" in n for n in trace.notes)


def test_too_little_traffic_is_refused_with_what_to_do():
    with pytest.raises(TraceError) as err:
        build([event(i, NOW - 5 - i) for i in range(MIN_REQUESTS - 1)])
    message = str(err.value)
    assert f"saw {MIN_REQUESTS - 1} HTTP requests" in message
    assert f"at least {MIN_REQUESTS}" in message and "traffic panel" in message


def test_the_window_is_bounded():
    for bad in (0, 4, 121, "ten", None):
        with pytest.raises(TraceError, match="5 to 120 seconds|whole number"):
            check_window(bad)
    many = [event(i, NOW - 100 + i * 0.02) for i in range(MAX_REQUESTS + 50)]
    trace = build(many, seconds=120)
    assert len(trace.requests) == MAX_REQUESTS
    assert trace.requests[-1]["recorded"]["latency_ms"] == 20.0
    assert any(f"newest {MAX_REQUESTS}" in n for n in trace.notes)


def test_fault_schedule_replays_knobs_at_the_start_and_dashboard_changes_at_their_second():
    slow = {**DEFAULTS, "latency_ms": 200}
    log = [{"ts": NOW - 50, "backend": "b1", "faults": slow},          # before the window
           {"ts": NOW - 10, "backend": "b1", "faults": dict(DEFAULTS)},  # cleared inside
           {"ts": NOW - 5, "backend": "b2", "killed": True}]
    now_faults = {"b1": dict(DEFAULTS), "b2": {**DEFAULTS, "error_rate": 0.2}}
    out = fault_schedule(log, now_faults, NOW - 30, NOW, DEFAULTS)
    assert out[0] == {"kind": "fault", "t": 0.0, "backend": "b1", "set": {"latency_ms": 200}}
    # b2's kill is the only change logged in the window: its knobs before it are unknown
    # to the log, so the defaults; the kill itself is not replayed.
    assert {"kind": "action", "t": 25.0, "what": "b2: process killed",
            "replayed": False} in out
    assert {"kind": "fault", "t": 20.0, "backend": "b1", "clear": True, "set": {}} in out
    # A backend with nothing logged had its current knobs all along.
    quiet = fault_schedule([], now_faults, NOW - 30, NOW, DEFAULTS)
    assert quiet == [{"kind": "fault", "t": 0.0, "backend": "b2", "set": {"error_rate": 0.2}}]


def test_each_request_keeps_the_knobs_its_backend_had():
    log = [{"ts": NOW - 12, "backend": "b1", "faults": {**DEFAULTS, "cpu_ms": 40}}]
    trace = build([event(i, NOW - 25 + i) for i in range(MIN_REQUESTS)], log=log)
    by_t = {r["t"]: r["recorded"]["faults"] for r in trace.requests}
    assert by_t[0.0] == {} and by_t[19.0] == {"cpu_ms": 40}


def test_the_trace_survives_the_file_and_the_replayer_builds_its_sandboxes_from_it(tmp_path):
    trace = build([event(i, NOW - 25 + i) for i in range(MIN_REQUESTS)])
    path = replay_trace.dump(trace, tmp_path / "trace.jsonl")
    again = replay_trace.load(path)
    assert (again.source, again.sandbox, again.notes) == (trace.source, trace.sandbox,
                                                          trace.notes)
    assert again.requests == trace.requests
    setup = replay.Replayer(again, ["random"], state_dir=tmp_path / "state")._setup()
    assert setup.backends == ["b1", "b2"] and setup.redis_url is None
    assert setup.topology is again.config


def test_windows_are_kept_per_sandbox_and_ids_are_checked(tmp_path):
    assert window_dir(tmp_path, "lab-a", "20261206-060000-abcdef") == \
        tmp_path / "windows" / "lab-a" / "20261206-060000-abcdef"
    for bad in ("../lab-b/x", "", "20261206-060000-ABCDEF/.."):
        with pytest.raises(TraceError):
            window_dir(tmp_path, "lab-a", bad)


def test_the_fault_log_is_appended_and_read_back(tmp_path):
    log_fault(tmp_path, "lab-a", "b1", {"latency_ms": 5}, now=10.0)
    log_fault(tmp_path, "lab-a", "b2", killed=True, now=11.0)
    path = tmp_path / "windows" / "lab-a" / "faults.jsonl"
    path.write_text(path.read_text() + '{"ts": 12, "backend"')  # a cut last line
    assert read_fault_log(path) == [{"ts": 10.0, "backend": "b1", "faults": {"latency_ms": 5}},
                                    {"ts": 11.0, "backend": "b2", "killed": True}]


def test_a_replay_seeds_every_pool_and_one_trace_always_gets_one_seed():
    trace = build([event(i, NOW - 25 + i) for i in range(MIN_REQUESTS)])
    seeded = replay.with_algorithm(trace.config, "power_of_two_choices", 7)
    assert seeded["pools"]["web"]["balancer"] == {"algorithm": "power_of_two_choices",
                                                  "seed": 7}
    split = {"routes": {"canary": {"match": {}, "split": [{"pool": "web", "weight": 9},
                                                         {"pool": "new", "weight": 1}]},
                        "rest": {"match": {}, "forward": "web"}}}
    seeded = replay.with_algorithm(split, "random", 7)
    assert seeded["routes"]["canary"]["seed"] == 7 and "seed" not in seeded["routes"]["rest"]
    assert replay.trace_seed(trace) == replay.trace_seed(replay_trace.Trace(**{
        **trace.__dict__, "requests": []}))
    other = replay_trace.Trace(**{**trace.__dict__, "run_id": "20261206-060001-abcdef"})
    assert replay.trace_seed(other) != replay.trace_seed(trace)


def test_a_history_that_does_not_reach_the_window_start_is_said():
    events = [event(i, NOW - 10 + i * 0.1) for i in range(50)]
    trace = window_trace(events, now=NOW, seconds=60, config=CONFIG, backends=["b1", "b2"],
                         faults_now={"b1": {}, "b2": {}}, fault_log=[], defaults=DEFAULTS,
                         sandbox_id="lab-abc", window_id="20261206-060000-abcdef",
                         history_limit=50)
    assert any("newest 50 requests" in n and "starts 50.0 s into the window" in n
               for n in trace.notes), trace.notes
    full_reach = window_trace(events, now=NOW, seconds=60, config=CONFIG,
                              backends=["b1", "b2"], faults_now={"b1": {}, "b2": {}},
                              fault_log=[], defaults=DEFAULTS, sandbox_id="lab-abc",
                              window_id="20261206-060000-abcdef", history_limit=51)
    assert not any("newest" in n for n in full_reach.notes)
