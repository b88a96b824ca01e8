"""Side-by-side figures from hand-made events: summaries, first divergence, agreement."""
from __future__ import annotations

from labs.framework import replay_compare as rc
from labs.framework.replay_trace import Trace


def trace(n=4):
    return Trace(slug="s", run_id="r", algorithm="round_robin", duration=1.0,
                 backends=["b1", "b2"], config={},
                 requests=[{"kind": "request", "i": i, "t": i * 0.25, "method": "GET",
                            "path": "/", "bytes_in": 0, "bytes_out": 0, "seed": i,
                            "recorded": {"backend": "b1", "status": 200, "latency_ms": 10}}
                           for i in range(n)])


def ev(i, backend, latency=10.0, status=200, algorithm="round_robin", inputs=None):
    return {"type": "request", "request_id": f"rp-{i}", "backend": backend, "status": status,
            "latency_ms": latency, "algorithm": algorithm, "inputs": inputs or {},
            "candidates": [{"name": "b1", "outstanding": 0}, {"name": "b2", "outstanding": 2}]}


def lane(label, backends, algorithm="round_robin", statuses=None):
    events = [ev(i, b, latency=10.0 * (i + 1), status=(statuses or {}).get(i, 200),
                 algorithm=algorithm) for i, b in enumerate(backends) if b]
    return rc.LaneData(label, algorithm, events, {i: {"status": 200} for i in range(4)})


def test_summary_counts_errors_missing_events_and_load():
    s = rc.summarise(trace(), lane("x", ["b1", "b2", "b1", None], statuses={1: 502}))
    assert (s["sent"], s["events"], s["errors"]) == (4, 3, 2)  # a 502 and a lost request
    assert s["per_backend"] == {"b1": 2, "b2": 1}
    assert s["p50_ms"] == 20.0 and s["p99_ms"] == 30.0
    assert s["load"] == {"b1": [1, 1], "b2": [1, 0]}  # 0.5 s buckets: t 0, .25 | .5


def test_first_divergence_names_both_decisions():
    t = trace()
    a = lane("rr", ["b1", "b2", "b1", "b2"])
    b = lane("lor", ["b1", "b2", "b2", "b2"], algorithm="least_outstanding_requests")
    d = rc.divergence(t, a, b)
    assert (d["i"], d["t"]) == (2, 0.5)
    assert d["baseline"]["backend"] == "b1" and d["other"]["backend"] == "b2"
    assert d["other"]["why"] == ("least_outstanding_requests picked b2 with inputs {}; "
                                 "outstanding per candidate: b1=0, b2=2")
    assert rc.divergence(t, a, a) is None


def test_agreement_of_two_replays():
    t = trace()
    a = lane("rr#1", ["b1", "b2", "b1", "b2"])
    b = lane("rr#2", ["b2", "b1", "b1", "b2"])
    g = rc.agreement(t, a, b)
    assert g["same_backend"] == 2 and g["counts_equal"] and g["p50_diff_ms"] == 0.0
    result = rc.compare(t, [a, b])
    assert [r["labels"] for r in result["repeats"]] == [["rr#1", "rr#2"]]
    text = rc.table(result)
    assert "rr#2 vs rr#1: same backend for 2 of 4 requests, per-backend counts identical" in text
    assert "rr#2 first diverges from rr#1 at lab second 0.000 (request 0, GET /)" in text


def test_why_without_a_backend():
    e = {"backend": None, "error": "no eligible backend"}
    assert rc.why(e) == "no backend: no eligible backend"
    assert rc.why(None) == "no event recorded for this request"


def test_pinned_cost_header_carries_the_recorded_time_and_outcome():
    from labs.backend.app import pinned_cost
    from labs.framework.replay import pinned_header

    assert pinned_header({"backend_ms": 10.66, "status": 200}) == "delay_ms=10.660;status=200"
    assert pinned_header({"backend_ms": None, "latency_ms": 5, "status": 502,
                          "termination": "SH"}) == "delay_ms=5.000;status=502;fault=reset"
    assert pinned_cost(pinned_header({"backend_ms": 3, "status": 502, "termination": "SD"})) \
        == (3.0, 502, "crash")
    for bad in (None, "", "soon", "delay_ms=x;status=200", "delay_ms=1;status=700",
                "delay_ms=1;fault=explode"):
        assert pinned_cost(bad) is None, bad
