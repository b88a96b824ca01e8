"""The trace a replay sends again: built from recordings (real and hand-made), JSON lines."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from labs.framework import replay_trace
from labs.framework.recording import Recording

RECORDINGS = Path(__file__).parent.parent / "labs" / "recordings"


def _recording(events, timeline=()):
    return Recording(slug="slow-backend-p99", time_scale=1, t0=0.0, duration=2.0,
                     config={"pools": {"web": {"balancer": {"algorithm": "round_robin"}}}},
                     events=list(events), timeline=list(timeline))


def _req(rid, t, latency, backend="b1", path="/work?ms=10", **more):
    return {"type": "request", "request_id": rid, "t": t, "latency_ms": latency,
            "backend": backend, "status": 200, "method": "GET", "path": path,
            "timings": {"connected": 1.0, "done": latency}, **more}


def test_requests_in_arrival_order_with_start_times_and_recorded_cost():
    rec = _recording([_req("a", 0.5, 400, "b3"), _req("b", 0.2, 100, "b1"),
                      _req("c", 0.3, 50, "b2", status=503, termination="--")],
                     [{"t": 0.05, "kind": "fault", "what": "b3: cpu_ms=40, hang=False",
                       "backend": "b3"},
                      {"t": 1.0, "kind": "fault", "what": "b3: faults cleared", "backend": "b3"},
                      {"t": 1.5, "kind": "fault", "what": "b2: process crashed (POST "
                       "/_control/crash)", "backend": "b2"}])
    trace = replay_trace.from_recording(rec, "run1", ["b1", "b2", "b3"])
    # a started at 0.5 - 0.4 = 0.1 s: first, although its event came last.
    assert [r["path"] for r in trace.requests] == ["/work?ms=10"] * 3
    assert [(r["i"], r["t"], r["recorded"]["backend"]) for r in trace.requests] == \
        [(0, 0.1, "b3"), (1, 0.1, "b1"), (2, 0.25, "b2")]
    assert trace.requests[0]["recorded"]["faults"] == {"cpu_ms": 40}
    assert trace.requests[0]["recorded"]["backend_ms"] == 399.0
    assert trace.requests[2]["recorded"]["status"] == 503
    assert trace.algorithm == "round_robin"
    assert trace.replayable_faults() == [
        {"kind": "fault", "t": 0.05, "backend": "b3", "set": {"cpu_ms": 40, "hang": False}},
        {"kind": "fault", "t": 1.0, "backend": "b3", "clear": True}]
    assert [f["what"] for f in trace.faults if f["kind"] == "action"] == \
        ["b2: process crashed (POST /_control/crash)"]


def test_faults_at_follows_set_and_clear():
    schedule = [{"kind": "fault", "t": 1.0, "backend": "b1", "set": {"latency_ms": 200}},
                {"kind": "fault", "t": 2.0, "backend": "b1", "set": {"error_rate": 0.5}},
                {"kind": "fault", "t": 3.0, "backend": "b1", "clear": True}]
    assert replay_trace.faults_at(schedule, "b1", 0.5) == {}
    assert replay_trace.faults_at(schedule, "b1", 2.5) == {"latency_ms": 200, "error_rate": 0.5}
    assert replay_trace.faults_at(schedule, "b1", 3.0) == {}
    assert replay_trace.faults_at(schedule, "b2", 2.5) == {}


def test_round_trip_through_json_lines(tmp_path):
    rec = _recording([_req("a", 0.2, 100), _req("b", 0.4, 100, "b2", bytes_in=5)])
    trace = replay_trace.from_recording(rec, "run1", ["b1", "b2"])
    path = replay_trace.dump(trace, tmp_path / "trace.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["kind"] == "trace" and lines[0]["version"] == 1
    assert lines[0]["requests"] == 2 and [x["kind"] for x in lines[1:]] == ["request"] * 2
    again = replay_trace.load(path)
    assert again.requests == trace.requests and again.config == trace.config
    assert again.requests[1]["bytes_in"] == 5


def test_a_run_without_requests_says_there_is_nothing_to_replay():
    with pytest.raises(replay_trace.TraceError, match="no HTTP requests"):
        replay_trace.from_recording(_recording([]), "r", ["b1"])


def test_unreadable_traces_are_refused_with_the_reason(tmp_path):
    (tmp_path / "trace.jsonl").write_text('{"kind": "trace", "version": 9}\n')
    with pytest.raises(replay_trace.TraceError, match="version 9"):
        replay_trace.load(tmp_path / "trace.jsonl")
    with pytest.raises(replay_trace.TraceError, match="no recording.json"):
        replay_trace.for_run(tmp_path / "nothing-here")


def test_a_real_recorded_lab_run_becomes_a_trace(tmp_path):
    data = json.loads(gzip.decompress((RECORDINGS / "slow-backend-p99--start.json.gz")
                                      .read_bytes()))
    rec = Recording.from_json(data)
    run_dir = tmp_path / "run-x"
    run_dir.mkdir()
    rec.save(run_dir / "recording.json")
    trace = replay_trace.for_run(run_dir, backends=["b1", "b2", "b3", "b4"])
    assert (run_dir / "trace.jsonl").exists()
    assert len(trace.requests) == len(rec.requests()) > 100
    assert trace.requests[0]["t"] == 0.0
    assert [f["set"] for f in trace.replayable_faults()] == [{"cpu_ms": 40}]
    # Requests b3 served after its fault was set carry it as their recorded backend state.
    on_b3 = [r for r in trace.requests if r["recorded"]["backend"] == "b3" and r["t"] > 0.5]
    assert on_b3 and all(r["recorded"]["faults"] == {"cpu_ms": 40} for r in on_b3)


def test_a_lab_run_writes_its_trace_beside_the_recording(tmp_path):
    from labs.framework import registry
    from labs.framework.runner import RunOptions, run_lab

    lab = registry.get("slow-backend-p99")
    outcome = run_lab(lab, lab.topology_text(), RunOptions(state_dir=tmp_path, run_id="t1"))
    trace = replay_trace.load(outcome.run_dir / "trace.jsonl")
    assert trace.run_id == "t1" and trace.slug == "slow-backend-p99"
    assert trace.algorithm == "round_robin" and trace.backends == ["b1", "b2", "b3", "b4"]
    assert len(trace.requests) == len(outcome.recording.requests()) > 100
    assert {r["path"] for r in trace.requests} == {"/work?ms=10"}
    assert [(f["backend"], f["set"]) for f in trace.replayable_faults()] == [("b3",
                                                                               {"cpu_ms": 40})]
    served = {r["recorded"]["backend"] for r in trace.requests}
    assert served == {"b1", "b2", "b3", "b4"}
