"""The lifecycle table and the pure probe-counting function."""
import pytest

from proxy.health import table
from proxy.health.table import Counters, apply_probe, as_mermaid, cause, find


def run(results, health="initial", rise=2, fall=3):
    """Feed (ok, detail) results; return the list of (index, target, cause) transitions."""
    counters = Counters()
    out = []
    for i, (ok, detail) in enumerate(results):
        counters, step = apply_probe(counters, health, ok, detail, rise, fall)
        if step is not None:
            out.append((i, step.target, step.cause))
            health = step.target
    return out, counters, health


def test_initial_becomes_healthy_after_healthy_threshold_passes():
    out, counters, health = run([(True, "200 in 1 ms")] * 3)
    assert out == [(1, "healthy", "2 consecutive passes")]
    assert counters == Counters(passes=3, fails=0)
    assert health == "healthy"


def test_healthy_becomes_unhealthy_after_threshold_failures_with_last_detail():
    results = [(False, "connection refused"), (False, "connection refused"),
               (False, "timeout after 500 ms")]
    out, _, health = run(results, health="healthy")
    assert out == [(2, "unhealthy", "3 consecutive failures: timeout after 500 ms")]
    assert health == "unhealthy"


def test_a_pass_resets_the_failure_run_and_a_failure_resets_the_pass_run():
    fail, ok = (False, "status 503 (expected 200)"), (True, "200 in 1 ms")
    out, counters, health = run([fail, fail, ok, fail, fail, ok], health="healthy")
    assert out == [] and health == "healthy"
    assert counters == Counters(passes=1, fails=0)
    out, _, health = run([ok, fail, ok, fail, ok], health="unhealthy")
    assert out == [] and health == "unhealthy"


def test_initial_goes_unhealthy_after_unhealthy_threshold_like_alb():
    out, _, _ = run([(False, "connection refused")] * 3, health="initial")
    assert out == [(2, "unhealthy", "3 consecutive failures: connection refused")]


def test_thresholds_of_one_move_on_the_first_probe_and_say_it_in_the_singular():
    out, _, _ = run([(True, "200 in 1 ms"), (False, "x"), (True, "200 in 2 ms")], rise=1, fall=1)
    assert out == [(0, "healthy", "1 consecutive pass"),
                   (1, "unhealthy", "1 consecutive failure: x"),
                   (2, "healthy", "1 consecutive pass")]


def test_no_transition_repeats_once_in_the_target_state():
    out, counters, _ = run([(False, "refused")] * 10, health="healthy")
    assert len(out) == 1 and counters.fails == 10


def test_counters_carried_over_a_lowered_threshold_act_at_once():
    counters = Counters(passes=4)
    counters, step = apply_probe(counters, "unhealthy", True, "200", 2, 3)
    assert step is not None and step.cause == "5 consecutive passes"


def test_apply_probe_accepts_the_model_enum():
    from proxy.model import Health
    _, step = apply_probe(Counters(passes=1), Health.INITIAL, True, "200", 2, 3)
    assert step.target == "healthy"


def test_every_row_is_between_declared_states_and_unique():
    seen = set()
    for row in table.TABLE:
        assert row.source in table.STATES[row.machine], row
        assert row.target in table.STATES[row.machine], row
        key = (row.machine, row.source, row.event)
        assert key not in seen, f"duplicate row {key}"
        seen.add(key)


def test_causes_are_filled_from_templates():
    assert cause("ejection", "included", "consecutive_5xx", count=5, duration="30s",
                 number=1) == "5 consecutive 5xx: ejected for 30s (ejection 1)"
    text = cause("ejection", "included", "failure_percentage", percent=48.2, window="10s",
                 minimum=10, duration="30s", number=1)
    assert text.startswith("48% failures over 10s (min 10 requests)")
    assert cause("intent", "active", "drain", delay="30s") == \
        "drain started: deregistration delay 30s"
    assert find("intent", "active", "drain_completed") is None
    with pytest.raises(KeyError):
        cause("health", "healthy", "passes")


def test_mermaid_has_every_row_and_the_three_machines():
    text = as_mermaid()
    assert text.startswith("stateDiagram-v2\n")
    arrows = [l for l in text.splitlines() if "-->" in l and not l.strip().startswith("[*]")]
    assert len(arrows) == len(table.TABLE)
    for machine in ("health", "ejection", "intent"):
        assert f" as {machine} {{" in text
    assert "intent_draining --> [*] : drain completed (removal)" in text
    assert "health_initial --> health_healthy : healthy_threshold passes" in text


def test_mermaid_of_one_machine_is_flat():
    text = as_mermaid("health")
    assert "{" not in text and "ejection" not in text and "intent" not in text
    with pytest.raises(ValueError, match="unknown machine"):
        as_mermaid("nope")


def test_rows_as_plain_data():
    rows = table.rows("intent")
    assert {"machine": "intent", "from": "draining", "event": "activate", "to": "active",
            "cause": "admin activate", "label": "admin activate"} in rows
