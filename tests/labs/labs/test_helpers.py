"""Time scale wording, request classification, charts and the report: pure pieces."""
from __future__ import annotations

import pytest

from labs.framework import report
from labs.framework.grading import count_chart, moment_diagram
from labs.framework.recording import Recording, cause_of, failed, percentile
from labs.framework.timescale import TimeScale, fmt_seconds


def test_every_figure_in_both_times():
    sc = TimeScale(10)
    assert sc.both(0.6) == "600 ms in the lab = 6 s in production at 1:10"
    assert sc.short(30) == "30 s (5 min prod)"
    assert TimeScale(1).both(2) == "2 s (lab and production alike, 1:1)"
    assert fmt_seconds(0.0042) == "4.2 ms" and fmt_seconds(300) == "5 min"
    with pytest.raises(ValueError):
        TimeScale(0.5)


def req(t, status=200, term="--", backend="b1", proxy_error=False, error=None, latency=10.0):
    return {"type": "request", "t": t, "ts": 1000 + t, "status": status, "termination": term,
            "backend": backend, "proxy_error": proxy_error, "error": error,
            "latency_ms": latency, "method": "GET", "path": "/", "request_id": f"r{t}"}


def test_failed_and_causes_follow_the_error_table():
    assert not failed(req(1))
    assert failed(req(1, 502, "SH", proxy_error=True))
    assert cause_of(req(1, 502, "SH", proxy_error=True)) == "backend-closed"
    assert cause_of(req(1, 503, "PQ", backend=None, proxy_error=True)) == "no-backend"
    assert cause_of(req(1, 504, "PH", proxy_error=True)) == "response-timeout"
    assert cause_of(req(1, 408, "PR", proxy_error=True, error="no body byte")) == "body-timeout"
    assert cause_of(req(1, 503)) == "backend-503"
    assert failed(req(1, 200, "SD"))  # cut mid-body: the user got half a page
    assert not failed(req(1, 200, "CD"))  # the client left
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([], 99) is None


def recording(events, timeline=()):
    return Recording(slug="x", time_scale=10, t0=1000.0, duration=4, config={},
                     events=list(events), timeline=list(timeline))


def test_requests_are_placed_by_start_time_and_charted():
    run = recording([req(1.0, latency=500), req(1.2, 502, "SH", proxy_error=True)],
                    [{"t": 0.5, "kind": "fault", "what": "b1 breaks", "label": "b1 breaks"}])
    assert [e["t"] for e in run.requests(start=0.5, end=1.0)] == [1.0]  # began at 0.5
    chart = count_chart(run, "t", {"ok": lambda e: not failed(e), "bad": failed}, bucket=0.5)
    assert chart["x"][:3] == [0, 0.5, 1.0]
    assert chart["series"][0]["values"][1] == 2.0 and chart["series"][1]["values"][2] == 2.0
    assert chart["markers"] == [{"t": 0.5, "label": "b1 breaks"}]
    svg = report.svg_chart(chart, run.scale)
    assert svg.startswith("<svg") and "b1 breaks" in svg and "(5s)" in svg


def test_moment_diagram_is_mermaid_with_both_times_and_inert_text():
    run = recording([req(1.2, 502, "SH", proxy_error=True),
                     {"type": "state_change", "t": 1.3, "backend": "b1", "kind": "health",
                      "old": "healthy", "new": "unhealthy", "cause": "3 failures; <script>"}],
                    [{"t": 1.0, "kind": "fault", "what": "x", "label": "b1 freezes",
                      "backend": "b1"}])
    text = moment_diagram(run, "m", 0, 2, ["b1"])["mermaid"]
    assert text.startswith("sequenceDiagram")
    assert "1 s (10 s prod): b1 freezes" in text
    assert "<script>" not in text and ";" not in text.split("cause")[-1]


def test_moment_diagram_draws_the_counted_failures_and_says_how_many_it_folds():
    # 9 failures began in the window; two of them end after it (at a 500 ms timeout).
    failures = [req(1.0 + i * 0.1, 504, "PH", proxy_error=True, latency=500) for i in range(9)]
    run = recording(failures + [req(3.5, 502, "SH", proxy_error=True)],  # outside: not counted
                    [{"t": 0.9, "kind": "fault", "what": "x", "label": "b1 freezes",
                      "backend": "b1"}])
    d = moment_diagram(run, "m", 0.5, 1.5, ["b1"], failures=failures)
    text = d["mermaid"]
    drawn = [line for line in text.splitlines() if "--xP" in line]
    assert len(drawn) == 5 and "... 4 more failed requests not drawn ..." in text
    assert "9 failed requests: 5 drawn, 4 folded" in text
    assert d["counts"] == {"failed": 9, "drawn": 5, "folded": 4}
    assert "after 500 ms" in drawn[0]


def test_health_check_window_counts_agree_in_headline_metrics_and_diagram():
    from labs.framework import registry
    from tests.labs.labs.test_graders_recorded import load

    lab = registry.get("health-check-window")
    for label in ("start", "solution"):
        result = lab.grade(load("health-check-window", label))
        n = result.metrics["failed_in_window"]
        assert result.headline.startswith(f"{n} requests failed")
        assert any(f", {n} requests failed" in e or f"; {n} requests failed" in e
                   for e in result.evidence)
        moment = [d for d in result.diagrams if d["title"] == "From the freeze to the removal"][0]
        drawn = [line for line in moment["mermaid"].splitlines() if "--xP" in line]
        assert moment["counts"]["failed"] == n == len(drawn) + moment["counts"]["folded"]
        assert any(m["label"] == f"b2 out: {n} failed since freeze"
                   for m in result.chart["markers"])
