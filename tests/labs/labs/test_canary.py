"""The canary rollout's decisions (labs/framework/canary.py), without sockets or clocks."""
from __future__ import annotations

import pytest

from labs.framework.canary import CanaryError, Plan, Rollout, Rule, judge, weight_for


def test_weights_give_the_canary_its_share_beside_the_stable_backends():
    assert [weight_for(p, 300) for p in (1, 5, 25)] == [3, 16, 100]
    assert weight_for(0.01, 300) == 1  # never 0: a step always sends something
    assert weight_for(50, 900) == 900 and weight_for(90, 900) == 1000  # the API's cap
    with pytest.raises(CanaryError, match="stable backend"):
        weight_for(5, 0)


def test_a_window_too_small_has_no_verdict():
    rule = Rule(max_error_rate=0.05, min_requests=5)
    v = judge([(1.0, 500, 3.0), (1.1, 500, 3.0)], rule)
    assert v["verdict"] == "inconclusive" and v["errors"] == 2
    assert "2 canary requests in the last 0.5 s, fewer than min_requests 5" in v["why"]


def test_error_rate_and_p99_each_fail_a_window():
    rule = Rule(max_error_rate=0.05, max_p99_ms=150, min_requests=4)
    failing = [(1.0, 200, 5.0)] * 3 + [(1.0, 500, 5.0)]
    assert judge(failing, rule)["verdict"] == "failing"
    assert "error rate 25% (1 of 4" in judge(failing, rule)["why"]
    slow = [(1.0, 200, 5.0)] * 3 + [(1.0, 200, 400.0)]
    v = judge(slow, rule)
    assert v["verdict"] == "failing" and "p99 400 ms" in v["why"]
    assert judge(slow, Rule(max_error_rate=0.05, min_requests=4))["verdict"] == "healthy"


def _rollout(rule: Rule) -> Rollout:
    return Rollout(Plan(canary="b4", pool="web", steps=(1, 5, 25), step_s=1.5), rule, 300)


def test_a_healthy_canary_steps_through_every_share():
    r = _rollout(Rule(max_error_rate=0.05, min_requests=2))
    ok = [(t / 10, 200, 5.0) for t in range(60)]
    done = []
    for i in range(60):
        t = i / 10
        done += r.tick(t, [x for x in ok if x[0] <= t])
    assert [(a["action"], a["percent"], a["weight"]) for a in done] == [
        ("step", 1, 3), ("step", 5, 16), ("step", 25, 100)]
    assert [a["t"] for a in done] == [0.0, 1.5, 3.0]
    assert "step 3 of 3: 25% of the traffic (weight 100 beside 300)" in done[2]["why"]
    assert "within max_error_rate 5%" in done[2]["why"]
    assert not r.rolled_back


def test_a_failing_canary_is_rolled_back_once_with_its_numbers():
    r = _rollout(Rule(max_error_rate=0.05, min_requests=5))
    seen = [(1.6 + i / 100, 500 if i % 3 == 0 else 200, 5.0) for i in range(20)]
    assert [a["action"] for a in r.tick(0.0, [])] == ["step"]
    assert [a["percent"] for a in r.tick(1.5, [])] == [5]
    acts = r.tick(1.7, [s for s in seen if s[0] <= 1.7])
    assert [a["action"] for a in acts] == ["rollback"]
    back = acts[0]
    assert back["weight"] == 0 and back["percent"] == 5 and back["window"]["errors"] == 4
    assert back["why"].startswith("rollback at 5%: error rate 40% (4 of 10 canary requests")
    assert r.tick(3.0, seen) == []  # rolled back for good: no step to 25%


def test_a_loose_rule_lets_the_canary_grow():
    r = _rollout(Rule(max_error_rate=0.5, min_requests=20))
    seen = [(1.0 + i / 50, 500 if i % 3 == 0 else 200, 5.0) for i in range(200)]
    done = []
    for i in range(60):
        t = i / 10
        done += r.tick(t, [s for s in seen if s[0] <= t])
    assert [a["action"] for a in done] == ["step", "step", "step"]


def test_bad_rules_and_plans_say_what_to_change():
    with pytest.raises(CanaryError) as exc:
        Rule.from_settings({"max_error_rate": 5, "min_requests": 0, "window_s": 0.5})
    assert "max_error_rate must be from 0 to 1, got 5" in str(exc.value)
    assert "min_requests must be from 1 to 10000, got 0" in str(exc.value)
    with pytest.raises(CanaryError, match="lab.canary.speed: unknown"):
        Rule.from_settings({"speed": 1})
    with pytest.raises(CanaryError, match="must grow"):
        Plan(canary="b4", pool="web", steps=(5, 1))
    with pytest.raises(CanaryError, match="between 0 and 100"):
        Plan(canary="b4", pool="web", steps=(1, 100))


def test_a_lab_with_a_bad_canary_watcher_is_refused_when_it_loads():
    from labs.framework.definition import Watcher

    with pytest.raises(ValueError, match="canary steps must grow"):
        Watcher(canary={"backend": "b4", "steps": [25, 5]})
    with pytest.raises(ValueError, match="canary: give backend"):
        Watcher(canary={"pool": "web", "speed": 2})
    assert Watcher(canary={"backend": "b4"}).canary_plan().steps == (1, 5, 25)
