"""The UDP game lab's drain, in real runs: b2 is drained at lab second 2 while players are
mid-match. The graded part is how b2's flows end: cut at the deregistration delay (a lost
match) or left to their players (idle expiry, or still playing when the run ends).

Three real runs (sandbox, proxy, UDP toy backends, locust players): the starting config,
a half fix (flow_idle right, the web pools' short delay kept) that fails on the drain
(and the moves its cuts cause), and the documented fix.
"""
from __future__ import annotations

import pytest

from labs.framework import registry
from labs.framework.runner import RunOptions, run_lab

SLUG = "udp-game-flows"


def verdicts(outcome) -> list[str]:
    return [e[:4] for e in outcome.result.evidence if e[:4] in ("PASS", "FAIL")]


@pytest.fixture(scope="module")
def runs(lab_state):
    lab = registry.get(SLUG)
    half = lab.solution_text().replace("deregistration_delay: 6m", "deregistration_delay: 1s")
    assert half != lab.solution_text()
    return {label: run_lab(lab, text, RunOptions(state_dir=lab_state, label=label))
            for label, text in (("start", lab.topology_text()), ("half", half),
                                ("solution", lab.solution_text()))}


@pytest.mark.timeout(600)
def test_the_start_config_fails_and_reports_how_the_drained_flows_ended(runs):
    start = runs["start"].result
    assert not start.passed and start.metrics["moves"] > 0
    assert start.metrics["drained"] == "b2"
    # With flow_idle 1 s a flow on b2 may expire in a quiet gap before the 1 s drain
    # deadline, or be cut by it: which depends on when the drain lands in the players'
    # bursts. Either way each flow on b2 at the drain is accounted for.
    drained = start.metrics["drained_flows"]
    assert drained["cut"] == start.metrics["drain_cuts"]
    assert drained["idle"] + drained["cut"] + drained["open_at_end"] == drained["at_drain"]
    assert any(e.startswith("INFO") and "when its drain began" in e for e in start.evidence)


@pytest.mark.timeout(600)
def test_with_flow_idle_fixed_a_short_delay_still_fails_on_the_drain(runs):
    half = runs["half"].result
    assert not half.passed
    # Every flow on b2 outlives the 1 s delay (flow_idle 3 s > the 1.5 s gaps), so each is
    # cut, and each of those players lands on another server: the only moves left.
    assert verdicts(runs["half"]) == ["FAIL", "PASS", "PASS", "FAIL", "PASS"], \
        half.evidence
    assert half.metrics["drain_cuts"] > 0 and half.metrics["flow_idle_s"] == 3.0
    assert half.metrics["moves"] == half.metrics["drain_cuts"]
    assert half.metrics["drained_flows"]["cut"] == half.metrics["drained_flows"]["at_drain"]
    cut = next(e for e in half.evidence if "cut by b2's drain deadline" in e)
    assert "1 s in the lab = 10 s in production" in cut


@pytest.mark.timeout(600)
def test_a_delay_as_long_as_a_match_passes_and_no_flow_is_cut(runs):
    fix = runs["solution"].result
    assert fix.passed, fix.evidence
    assert fix.metrics["drain_cuts"] == 0 and fix.metrics["moves"] == 0
    drained = fix.metrics["drained_flows"]
    assert drained["at_drain"] > 0 and drained["cut"] == 0
    assert drained["open_at_end"] + drained["idle"] == drained["at_drain"]
