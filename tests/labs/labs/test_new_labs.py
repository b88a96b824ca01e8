"""The labs of issue 15 on their recorded runs: what each grader must tell apart.

Recordings are real runs (record_fixtures.py); ``outlier-black-hole--nocap`` is the same
lab with passive health but no ejection cap (outlier-nocap.yaml), recorded the same way;
``retry-storm--budget`` is the retry storm with the proxy's retry budget alone
(retry-budget-only.yaml: ``labs run retry-storm --config``, its recording.json), and
``cross-zone--rebalanced`` the cross-zone lab with the zones evened out instead
(cross-zone-rebalanced.yaml), ``retry-storm--noretry`` with every retry off
(retry-none.yaml). ``websocket-reconnect-storm--leastconn`` and ``--jitter`` are the
reconnect storm with one of its two fixes each (ws-leastconn-only.yaml, ws-jitter-only.yaml).
"""
from __future__ import annotations

import gzip
import json

from labs.framework import definition, registry
from labs.framework.recording import Recording
from tests.labs.labs.conftest import RECORDINGS
from tests.labs.labs.test_definition import copy_lab


def load(slug: str, label: str) -> Recording:
    with gzip.open(RECORDINGS / f"{slug}--{label}.json.gz", "rt") as fh:
        return Recording.from_json(json.load(fh))


def test_grpc_l4_pins_each_channel_and_l7_spreads_the_calls():
    lab = registry.get("grpc-l4-pinning")
    start, fix = lab.grade(load(lab.slug, "start")), lab.grade(load(lab.slug, "solution"))
    # L4: two client channels, two choices in the whole run, two servers never called.
    assert start.metrics["connections"] == 2 and len(start.metrics["idle"]) == 2
    assert start.headline == "2 of 4 servers answered no call"
    assert any("layer 4: the proxy balanced 2 connections" in e for e in start.evidence)
    # L7: each call (stream) balanced on its own; the clients' count agrees.
    assert not fix.metrics["idle"] and min(fix.metrics["shares"].values()) >= 0.15
    assert fix.metrics["proxy_requests"] >= fix.metrics["calls"]
    assert start.chart["kind"] == "bars" and start.chart["labels"] == ["b1", "b2", "b3", "b4"]


def test_mixed_durations_blames_the_queue_not_the_lookup():
    lab = registry.get("mixed-durations")
    start, fix = lab.grade(load(lab.slug, "start")), lab.grade(load(lab.slug, "solution"))
    assert start.metrics["quick_p50_ms"] < 50  # the median is fine under round robin...
    assert start.metrics["quick_p99_ms"] > 250  # ...its tail is the queue behind exports
    assert start.metrics["tail_in_flight_p50"] >= 3  # three threads, all busy
    assert fix.metrics["tail_in_flight_p50"] < start.metrics["tail_in_flight_p50"]


def test_outlier_ejection_without_a_cap_empties_the_pool():
    lab = registry.get("outlier-black-hole")
    start = lab.grade(load(lab.slug, "start"))
    nocap = lab.grade(load(lab.slug, "nocap"))
    fix = lab.grade(load(lab.slug, "solution"))
    # No passive health: the fast-failing b3 gets far more than a quarter of the traffic.
    share = start.metrics["per_backend"]["b3"] / sum(start.metrics["per_backend"].values())
    assert share > 0.3 and start.metrics["b3_ejections"] == 0
    # Ejection without a cap stops the black hole but ejects every server at the blip.
    assert not nocap.passed
    assert nocap.evidence[0].startswith("PASS") and nocap.evidence[1].startswith("FAIL")
    assert nocap.metrics["max_ejected"] == 4 and nocap.metrics["no_backend"] > 0
    # The cap keeps half the pool; the cap's refusals are reported.
    assert fix.passed and fix.metrics["max_ejected"] <= 2 and fix.metrics["no_backend"] == 0
    assert any("the cap refused" in e for e in fix.evidence)


def test_a_lab_declares_known_concepts_only(tmp_path):
    folder = copy_lab(tmp_path)
    text = (folder / "lab.yaml").read_text()
    assert "concepts: [liveness-readiness]\n" in text
    (folder / "lab.yaml").write_text(text.replace("concepts: [liveness-readiness]",
                                                  "concepts: [liveness-readiness, telepathy]"))
    lab, problems = definition.load(folder)
    assert lab is None
    assert any("lab.yaml: concepts: unknown concept(s) telepathy; known: roles" in p
               for p in problems), problems


def test_every_new_lab_declares_its_concepts():
    for slug in ("grpc-l4-pinning", "mixed-durations", "outlier-black-hole", "udp-game-flows",
                 "cross-zone", "canary-rollback", "retry-storm", "websocket-reconnect-storm"):
        lab = registry.get(slug)
        assert lab.spec.concepts and lab.summary()["concepts"] == lab.spec.concepts


def test_udp_flows_that_expire_between_heartbeats_move_the_players():
    lab = registry.get("udp-game-flows")
    start, fix = lab.grade(load(lab.slug, "start")), lab.grade(load(lab.slug, "solution"))
    # The proxy's flows and the players' own replies agree on every move.
    assert start.metrics["moves"] > 0 and start.metrics["moves"] == \
        start.metrics["moves_seen_by_players"]
    assert start.metrics["flows"] > start.metrics["players"]
    assert start.metrics["closed_by"].get("idle", 0) > 0
    assert fix.metrics["flows"] == fix.metrics["players"] and fix.metrics["moves"] == 0
    assert "1 s in the lab = 10 s in production at 1:10" in " ".join(start.evidence)


def test_udp_flow_idle_must_stay_within_reason():
    lab = registry.get("udp-game-flows")
    run = load(lab.slug, "solution")
    run.config = json.loads(json.dumps(run.config))
    run.config["listeners"]["game"]["udp"]["flow_idle"] = "2h"
    result = lab.grade(run)  # the same traffic, no move, but flows held for two hours
    assert not result.passed
    assert [e[:4] for e in result.evidence[:3]] == ["PASS", "PASS", "FAIL"]


def test_a_sandbox_with_a_udp_listener_and_toy_backends_in_udp_mode(tmp_path):
    """What the UDP lab's runs stand on: the sandbox says udp://, probes no TCP port on
    it, and finds the toy backends' HTTP face on their control ports."""
    import socket
    from urllib.parse import urlsplit

    from labs.framework import services
    from labs.framework.definition import split_document
    from labs.sandbox import SandboxService

    lab = registry.get("udp-game-flows")
    svc = SandboxService(tmp_path)
    sb = svc.create("udp-lab", backends=lab.backend_names,
                    config=split_document(lab.topology)[0])
    try:
        assert sb.proxy_url.startswith("udp://") and sb.listeners["game"] == sb.proxy_url
        for name, app in lab.spec.sandbox.apps.items():
            services.start_app(svc, sb.id, name, app)
        parts = svc.parts(sb.id)
        assert all(p["alive"] for p in parts.values()), parts
        url = urlsplit(sb.proxy_url)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(b"hello", (url.hostname, url.port))
            assert s.recv(100) == b"b1 hello"  # through the proxy to a UDP toy backend
    finally:
        svc.stop(sb.id, grace=2)


def test_cross_zone_off_runs_the_lone_server_of_zone_a_hot():
    lab = registry.get("cross-zone")
    start, fix = lab.grade(load(lab.slug, "start")), lab.grade(load(lab.slug, "solution"))
    # Off: node-a's half of the clients all land on b1, node-b's spread over three.
    assert start.metrics["hot"] == "b1" and start.metrics["shares"]["b1"] > 0.4
    assert start.metrics["cross_zone_requests"] == 0
    assert start.metrics["worst_node"] == "node-a" and start.metrics["p99_ratio"] > 1.4
    assert "cross_zone off: only zone us-east-1a's backends (1 eligible)" in \
        " ".join(start.evidence)
    # On: a quarter each, about half the requests cross zones, both nodes' users alike.
    assert max(fix.metrics["shares"].values()) < 0.3
    assert 0.3 < fix.metrics["cross_zone_requests"] / sum(fix.metrics["per_backend"].values()) \
        < 0.7
    assert fix.metrics["p99_ratio"] <= 1.4 and fix.metrics["failed"] == 0
    # The other fix: cross-zone still off, two servers a zone: even, and nothing crosses.
    even = lab.grade(load(lab.slug, "rebalanced"))
    assert even.passed and even.metrics["cross_zone_requests"] == 0
    assert max(even.metrics["shares"].values()) < 0.3


def test_canary_rollback_reads_the_controllers_decisions():
    lab = registry.get("canary-rollback")
    start, fix = lab.grade(load(lab.slug, "start")), lab.grade(load(lab.slug, "solution"))
    # The loose rule never had a verdict: the canary reached 25% and failed users there.
    assert not start.metrics["rolled_back"] and start.metrics["max_percent"] == 25
    assert start.metrics["errors_by_step"]["25%"] > start.metrics["errors_by_step"]["1%"]
    assert any("fewer than min_requests 20: no verdict yet" in e for e in start.evidence)
    # The tight rule rolled back while the canary was small, and says why.
    assert fix.metrics["rolled_back"] and fix.metrics["rollback_percent"] < 25
    assert fix.metrics["failed"] < start.metrics["failed"]
    assert any("above max_error_rate 5%" in e for e in fix.evidence)
    labels = [m["label"] for m in fix.chart["markers"]]
    assert "canary rolled back" in labels and "v2 starts failing" in labels


def test_retry_storm_counts_each_layer():
    lab = registry.get("retry-storm")
    start = lab.grade(load(lab.slug, "start"))
    budget = lab.grade(load(lab.slug, "budget"))
    fix = lab.grade(load(lab.slug, "solution"))
    # Both layers multiply during the slowdown; the worst user request made 16 attempts.
    assert start.metrics["client_factor"] > 1.5 and start.metrics["proxy_factor"] > 2
    assert any("4 client attempts and 16 attempts on the servers" in e for e in start.evidence)
    # The budget alone caps the proxy's layer (and says so), not the clients'.
    assert not budget.passed and budget.metrics["retry_budget_refused"] > 0
    assert budget.metrics["proxy_factor"] < start.metrics["proxy_factor"]
    assert budget.metrics["client_factor"] > 1.5
    # 429 + Retry-After, honored: about one attempt per user request, all succeed.
    assert fix.metrics["shed_429"] > 0 and fix.metrics["statuses"].get("502", 0) == 0
    assert fix.metrics["amplification"] < 1.5 and fix.metrics["success"] >= 0.9
    # No retries at all: no amplification, and every drop is a user's failure.
    none = lab.grade(load(lab.slug, "noretry"))
    assert none.metrics["amplification"] == 1.0 and none.metrics["success"] < 0.9
    assert none.evidence[0].startswith("PASS") and none.evidence[1].startswith("FAIL")


def test_retry_storm_layers_from_the_query_alone():
    from labs.framework.registry import get

    grader = get("retry-storm").grader
    ev = [
        {"path": "/work?ms=20&req=u1-1&try=1", "status": 502, "backend": "b2",
         "retries": [{"backend": "b1"}, {"backend": "b2"}, {"backend": "b1"}]},
        {"path": "/work?ms=20&req=u1-1&try=2", "status": 200, "backend": "b1", "retries": []},
        {"path": "/work?ms=20&req=u2-1&try=1", "status": 429, "backend": "b1", "retries": []},
        {"path": "/health", "status": 200, "backend": "b1"},  # not a user request
        {"path": "/work?ms=20&req=u3-1&try=1", "status": 503, "backend": None, "retries": []},
    ]
    n = grader.layers(grader.user_requests(ev))
    assert n["user_requests"] == 3 and n["client_attempts"] == 4
    assert n["server_attempts"] == 4 + 1 + 1 + 0  # a 503 no-backend reached no server
    assert n["succeeded"] == 1 and round(n["amplification"], 2) == 2.0


def test_reconnect_storm_needs_both_fixes():
    lab = registry.get("websocket-reconnect-storm")
    start, fix = lab.grade(load(lab.slug, "start")), lab.grade(load(lab.slug, "solution"))
    leastconn = lab.grade(load(lab.slug, "leastconn"))
    jitter = lab.grade(load(lab.slug, "jitter"))
    # Immediate reconnects: the cut users come back in one 100 ms, whatever the balancer.
    for r in (start, leastconn):
        assert not r.passed and r.metrics["peak_burst"] > 6
        assert r.evidence[0].startswith("FAIL")
        # More at once than the servers load (four each): refused, and tried again.
        assert r.metrics["refused_after_cut"].get("503", 0) > 0
        assert any("handshakes after the cut were refused" in e for e in r.evidence)
    # Round robin gives the new b4 a third of the comeback, and nothing moves afterwards.
    for r in (start, jitter):
        assert r.metrics["at_end"]["b4"] < r.metrics["at_end"]["b2"] / 2
        assert r.evidence[2].startswith("FAIL")
    assert not jitter.passed and jitter.metrics["peak_burst"] <= 6
    # Least connections fills b4 first; full jitter spreads the comeback.
    assert leastconn.evidence[2].startswith("PASS") and fix.passed
    assert fix.metrics["peak_burst"] <= 6 and fix.metrics["imbalance"] <= 1.5
    assert fix.metrics["cut_users"] >= 10 and 0 < fix.metrics["back_s"] <= 3
    assert fix.metrics["refused_after_cut"] == {}
    assert [s["label"] for s in fix.chart["series"]][:2] == ["new tunnels per 100 ms",
                                                             "tunnels on b1"]


def test_reconnect_storm_helpers_read_tunnels_alone():
    grader = registry.get("websocket-reconnect-storm").grader
    t = [{"id": "a", "backend": "b1", "opened": 0.0, "closed": 2.0},
         {"id": "b", "backend": "b1", "opened": 0.1, "closed": 2.01},
         {"id": "c", "backend": "b2", "opened": 0.2, "closed": None},
         {"id": "d", "backend": "b2", "opened": 2.05, "closed": None},
         {"id": "e", "backend": "b3", "opened": 2.5, "closed": None}]
    assert grader.live_at(t, 1.0) == 3 and grader.live_at(t, 2.005, "b1") == 1
    assert grader.cut_at(t, "b1", before=5.0) == 2.0
    assert grader.cut_at(t, "b1", before=1.0) is None  # closed only when the traffic ended
    assert grader.peak_burst([2.05, 2.5, 2.52, 2.59, 2.7], 0.1) == (3, 2.5)
    assert grader.back_at(t, 2.0, until=5.0) == 2.5  # three live again
    assert grader.back_at(t[:4], 2.0, until=5.0) is None
