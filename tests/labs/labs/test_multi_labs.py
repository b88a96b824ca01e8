"""The labs with several balancers (issue 15) on their recorded runs, and their graders'
pieces on plain data: what each grader must tell apart.

Recordings are real runs (record_fixtures.py)."""
from __future__ import annotations

from labs.framework import registry
from tests.labs.labs.test_new_labs import load


def call(t, ok, via="vip", node="vip"):
    return {"type": "client", "t": t, "via": via, "node": node, "ok": ok}


def test_failover_gap_runs_from_the_death_to_the_first_answer_after_it():
    grader = registry.get("balancer-ha").grader
    calls = [call(1.0, True), call(1.49, True), call(1.52, False), call(1.7, False),
             call(2.05, True), call(2.1, True)]
    gap, lost = grader.failover_gap(calls, t_kill=1.5)
    assert gap == 0.55 and [c["t"] for c in lost] == [1.52, 1.7]
    assert grader.failover_gap(calls[:4], 1.5)[0] is None  # never answered again
    stale, lost = grader.stale_window([call(1.6, False, "dns", "lb1"),
                                       call(2.4, False, "dns", "lb1"),
                                       call(2.5, True, "dns", "lb2")], 1.5)
    assert stale == 0.9 and len(lost) == 2


def test_balancer_ha_measures_both_gaps_from_what_the_clients_saw():
    lab = registry.get("balancer-ha")
    start, fix = lab.grade(load(lab.slug, "start")), lab.grade(load(lab.slug, "solution"))
    # Starting clocks: lb2 waits 1.5 s of silence, clients keep lb1 for a 3 s TTL.
    assert start.metrics["vip_gap_s"] > 1.0 and start.metrics["vip_lost"] > 0
    assert start.metrics["dns_stale_s"] > 1.2
    assert start.metrics["dns_lost"] == start.metrics["dns_lost_on_lb1"] > 0
    assert [e[:4] for e in start.evidence[:3]] == ["FAIL", "FAIL", "PASS"]
    # The fix: a 0.1 s heartbeat, dead after 0.3 s; a 0.5 s TTL.
    assert fix.passed and fix.metrics["vip_gap_s"] <= 0.6 and fix.metrics["dns_stale_s"] <= 1.2
    assert fix.metrics["vip_lost"] < start.metrics["vip_lost"]
    assert fix.metrics["queries_per_client_s"] > start.metrics["queries_per_client_s"]
    # The takeover is an event with its reason, on the chart with the clients' outcomes.
    assert any("missed at 0.1 s; dead after 0.3 s" in e and "take over vip" in e
               for e in fix.evidence)
    assert any("DNS: lb1 failed 2 health check(s) in a row" in e for e in fix.evidence)
    labels = [m["label"] for m in start.chart["markers"]]
    assert "lb1 dies" in labels and "lb2 takes vip" in labels
    assert {s["label"] for s in start.chart["series"]} >= {"floating address: failed",
                                                         "DNS clients: failed"}


def test_peak_in_flight_counts_overlapping_requests_per_backend():
    grader = registry.get("p2c-herding").grader
    reqs = [{"backend": "b1", "t": 1.0, "latency_ms": 500},   # 0.5 .. 1.0
            {"backend": "b1", "t": 1.2, "latency_ms": 500},   # 0.7 .. 1.2
            {"backend": "b1", "t": 1.3, "latency_ms": 200},   # 1.1 .. 1.3
            {"backend": "b2", "t": 1.0, "latency_ms": 100}]
    assert grader.peak_in_flight(reqs) == {"b1": (2, 0.7), "b2": (1, 0.9)}


def test_p2c_herding_tells_a_herd_from_two_choices():
    lab = registry.get("p2c-herding")
    start, fix = lab.grade(load(lab.slug, "start")), lab.grade(load(lab.slug, "solution"))
    # Every balancer took its third of the clients, in both runs.
    for result in (start, fix):
        assert set(result.metrics["per_proxy"]) == {"lb1", "lb2", "lb3"}
        assert min(result.metrics["per_proxy"].values()) > 0.25 * result.metrics["requests"]
    # On the stale report, least outstanding sends the fleet's requests to one server.
    assert not start.passed and max(start.metrics["peak_in_flight"].values()) > 24
    assert start.metrics["p99_ms"] > 350
    # Two random choices on the same report: no server holds more than its threads' worth.
    assert fix.passed and max(fix.metrics["peak_in_flight"].values()) <= 24
    assert fix.metrics["p99_ms"] < start.metrics["p99_ms"]
    assert {s["label"] for s in start.chart["series"]} >= {"b1", "b5", "failed"}


def test_every_decision_of_a_balancer_on_the_report_says_how_old_it_was():
    rec = load("p2c-herding", "start")
    decisions = [e for e in rec.requests() if e.get("backend")]
    assert decisions and all(e.get("proxy") in ("lb1", "lb2", "lb3") for e in decisions)
    late = [e for e in decisions if e["t"] > 1.0]
    assert all(e["inputs"]["load"] == "reported" and e["inputs"]["report_age_s"] is not None
               for e in late)


def test_a_proxy_fault_and_the_balancer_list_are_checked():
    import pytest
    from pydantic import ValidationError

    from labs.framework.definition import Fault, SandboxSpec

    assert Fault(at="1s", proxy="lb1", crash=True).proxy == "lb1"
    for bad in ({"at": "1s", "proxy": "lb1", "set": {"hang": True}},
                {"at": "1s", "proxy": "lb1", "backend": "b1", "crash": True}):
        with pytest.raises(ValidationError, match="proxy: NAME goes with crash, stop or"):
            Fault(**bad)
    with pytest.raises(ValidationError, match="stop needs proxy: NAME"):
        Fault(at="1s", backend="b1", stop=True)
    with pytest.raises(ValidationError, match="name two or more"):
        SandboxSpec(proxies=["lb1"])
    with pytest.raises(ValidationError, match="its own name"):
        SandboxSpec(proxies=["lb1", "lb1"])


def test_the_runner_refuses_heartbeats_that_cannot_work():
    import pytest

    from labs.framework.runner import RunRefused, check_document

    lab = registry.get("balancer-ha")
    doc = {**__import__("yaml").safe_load(lab.solution_text())}
    doc["lab"] = {"heartbeat": {"interval_s": 0.5, "dead_after_s": 0.1}}
    with pytest.raises(RunRefused) as err:
        check_document(lab, doc)
    assert [e["path"] for e in err.value.errors] == ["lab.heartbeat.dead_after_s"]
