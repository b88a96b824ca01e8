"""The labs of issue 15 on their recorded runs: what each grader must tell apart.

Recordings are real runs (record_fixtures.py); ``outlier-black-hole--nocap`` is the same
lab with passive health but no ejection cap (outlier-nocap.yaml), recorded the same way.
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
    for slug in ("grpc-l4-pinning", "mixed-durations", "outlier-black-hole", "udp-game-flows"):
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
