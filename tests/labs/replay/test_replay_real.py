"""Replays in real sandboxes: a small hand-made trace (2 s, 60 requests) of the slow-backend
lab's topology, replayed under round robin twice and least outstanding requests at once.

What a learner would check: every request of the trace arrives and is answered in every
replay, the same fault schedule hits the same backend, round robin spreads the trace the
same way twice (the determinism the docs state), and least outstanding requests sends the
slow backend fewer requests, with the first decision that differs explained.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labs.backend.testing import start_backend
from labs.framework import registry, replay, replay_trace
from labs.framework.definition import split_document
from labs.sandbox.commands import REPO_ROOT

SLUG = "slow-backend-p99"
N = 60
UPLOADS = {10, 40}  # these requests are POST /upload with a 2000-byte body


def small_trace() -> replay_trace.Trace:
    lab = registry.get(SLUG)
    config, _ = split_document(lab.topology)
    requests = []
    for i in range(N):
        post = i in UPLOADS
        requests.append({"kind": "request", "i": i, "t": round(i / 30.0, 4),
                         "method": "POST" if post else "GET",
                         "path": "/upload" if post else "/work?ms=5",
                         "bytes_in": 2000 if post else 0, "bytes_out": 0, "seed": i,
                         "recorded": {"backend": lab.backend_names[i % 4], "status": 200,
                                      "latency_ms": 6.0, "backend_ms": 5.0,
                                      "termination": "--", "faults": {}}})
    faults = [{"kind": "fault", "t": 0.0, "backend": "b3", "set": {"cpu_ms": 150}},
              {"kind": "action", "t": 1.0, "what": "b2: process crashed", "replayed": False},
              {"kind": "fault", "t": 1.8, "backend": "b3", "clear": True}]
    return replay_trace.Trace(slug=SLUG, run_id="hand-made", algorithm="round_robin",
                              duration=2.0, backends=lab.backend_names, config=config,
                              faults=faults, requests=requests)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    state = tmp_path_factory.mktemp("replay-state")
    out = tmp_path_factory.mktemp("replay-out")
    algos = ["round_robin", "round_robin", "least_outstanding_requests"]
    result = replay.Replayer(small_trace(), algos, state_dir=state, out_dir=out,
                             labels=["rr#1", "rr#2", "lor"]).run()
    return result, out, state


def lanes(result):
    return {lane["label"]: lane for lane in result["lanes"]}


def test_every_request_is_replayed_and_answered_in_every_sandbox(replayed):
    result, out, state = replayed
    for lane in result["lanes"]:
        assert (lane["sent"], lane["answered"], lane["events"], lane["errors"]) == (N, N, N, 0), \
            lane
        applied = [(f["t"], f["backend"], f.get("error")) for f in lane["faults_applied"]]
        assert sorted(applied) == [(0.0, "b3", None), (1.8, "b3", None)]
    assert [a["what"] for a in result["not_replayed"]] == ["b2: process crashed"]
    saved = json.loads((out / "result.json").read_text())
    assert saved["requests"] == N
    assert json.loads((out / "status.json").read_text())["state"] == "done"
    # Every sandbox was stopped afterwards.
    assert not list(state.rglob("rp-*.json"))


def test_round_robin_twice_spreads_the_trace_identically(replayed):
    result, _, _ = replayed
    by = lanes(result)
    assert by["rr#1"]["per_backend"] == by["rr#2"]["per_backend"] == \
        {"b1": 15, "b2": 15, "b3": 15, "b4": 15}
    (rep,) = result["repeats"]
    assert rep["labels"] == ["rr#1", "rr#2"] and rep["counts_equal"]
    assert rep["errors_diff"] == 0


def test_least_outstanding_requests_avoids_the_slow_backend_and_says_why(replayed):
    result, _, _ = replayed
    by = lanes(result)
    assert by["lor"]["per_backend"]["b3"] < by["rr#1"]["per_backend"]["b3"]
    div = {d["label"]: d["first"] for d in result["divergence"]}
    first = div["lor"]
    assert first is not None
    assert first["baseline"]["why"].startswith("round_robin picked ")
    assert first["other"]["why"].startswith("least_outstanding_requests picked ")
    assert first["baseline"]["backend"] != first["other"]["backend"]


def test_the_request_mix_reaches_the_proxy_as_recorded(replayed):
    result, _, _ = replayed
    for lane in result["lanes"]:
        assert lane["bytes_in"] == 2000 * len(UPLOADS)  # the two uploads' bodies
        assert sum(sum(series) for series in lane["load"].values()) == N


def test_the_replay_seed_makes_a_backends_fault_draws_repeatable():
    with start_backend("seeded") as b:
        b.control({"error_rate": 0.5})
        first = [b.request("GET", "/", headers={"X-LBLab-Replay-Seed": str(s)}).status
                 for s in range(40)]
        again = [b.request("GET", "/", headers={"X-LBLab-Replay-Seed": str(s)}).status
                 for s in range(40)]
        assert first == again
        assert set(first) == {200, 500}


def test_a_pinned_cost_overrides_the_backends_own_behaviour():
    with start_backend("pinned") as b:
        b.control({"error_rate": 1.0, "latency_ms": 2000})
        ok = b.request("GET", "/work?ms=3000",
                       headers={"X-LBLab-Replay-Cost": "delay_ms=5;status=200"})
        assert ok.status == 200 and ok.json()["pinned_ms"] == 5.0
        gone = b.request("POST", "/upload", body=b"x" * 100,
                         headers={"X-LBLab-Replay-Cost": "delay_ms=0;status=503"})
        assert gone.status == 503
        with pytest.raises(OSError):  # the recorded reset: no answer at all
            b.request("GET", "/", headers={"X-LBLab-Replay-Cost": "delay_ms=0;status=502;"
                                                                  "fault=reset"})
        # Malformed: served normally (here: the injected error).
        b.control({"latency_ms": 0})
        assert b.request("GET", "/", headers={"X-LBLab-Replay-Cost": "soon"}).status == 500


def test_cli_refuses_unknown_runs_and_algorithms_with_what_to_change(tmp_path):
    def labs(*args):
        return subprocess.run([sys.executable, "manage.py", "labs", "replay", *args,
                               "--state-dir", str(tmp_path)], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)

    out = labs("nope", "--algorithms", "round_robin")
    assert out.returncode != 0 and "no run 'nope'" in out.stderr
    run_dir = tmp_path / "labruns" / "r1"
    run_dir.mkdir(parents=True)
    replay_trace.dump(small_trace(), run_dir / "trace.jsonl")
    out = labs("r1", "--algorithms", "round_robin,fastest")
    assert out.returncode != 0 and "unknown algorithm fastest; choose from" in out.stderr


def test_cli_prints_the_table(tmp_path):
    run_dir = tmp_path / "labruns" / "r2"
    run_dir.mkdir(parents=True)
    replay_trace.dump(small_trace(), run_dir / "trace.jsonl")
    # Pinned costs: every backend answers each request after its recorded time (6 ms here)
    # with its recorded status, whatever b3's schedule says.
    out = subprocess.run([sys.executable, "manage.py", "labs", "replay", "r2", "--algorithms",
                          "round_robin,least_connections", "--cost", "pinned",
                          "--state-dir", str(tmp_path)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "(cost: pinned)" in out.stderr
    saved = json.loads(next((run_dir / "replays").glob("*/result.json")).read_text())
    assert saved["cost"] == "pinned"
    assert all(lane["faults_applied"] == [] for lane in saved["lanes"])
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["run", "requests", "errors", "p50", "ms", "p99", "ms",
                                "b1", "b2", "b3", "b4"]
    assert lines[2].startswith("recorded (round_robin)")
    assert lines[3].split()[:3] == ["round_robin", str(N), "0"]
    assert lines[4].split()[:3] == ["least_connections", str(N), "0"]
    assert "NOT REPLAYED at 1s: b2: process crashed" in out.stdout
    assert (run_dir / "replays").is_dir()
