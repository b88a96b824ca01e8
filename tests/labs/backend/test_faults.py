"""Fault model and decisions: pure logic, fake clock, seeded randomness, no sockets."""

import random

import pytest

from labs.backend.faults import DEFAULTS, KNOBS, AppDecision, FaultError, FaultState, validate_patch


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def state() -> tuple[FaultState, FakeClock]:
    clock = FakeClock()
    return FaultState(clock), clock


def errors_of(patch) -> list[str]:
    with pytest.raises(FaultError) as info:
        validate_patch(patch)
    return info.value.errors


def test_defaults_are_quiet():
    faults, clock = state()
    assert faults.snapshot() == DEFAULTS
    assert faults.app_quiet(clock())
    assert faults.live_quiet()
    assert faults.decide_app(clock(), random.Random(0)) == AppDecision()


def test_every_knob_is_documented():
    for knob in KNOBS:
        assert knob.help and knob.name in DEFAULTS


def test_partial_update_keeps_other_knobs():
    faults, _ = state()
    faults.apply({"latency_ms": 200})
    changed = faults.apply({"error_rate": 0.25, "error_status": 503})
    assert changed == {"error_rate": 0.25, "error_status": 503}
    snap = faults.snapshot()
    assert snap["latency_ms"] == 200 and snap["error_rate"] == 0.25 and snap["error_status"] == 503


@pytest.mark.parametrize("patch, message", [
    ({"error_rate": 1.5}, "error_rate must be between 0 and 1, got 1.5"),
    ({"error_rate": -0.1}, "error_rate must be between 0 and 1, got -0.1"),
    ({"latency_ms": -5}, "latency_ms must be >= 0, got -5"),
    ({"latency_ms": "200"}, 'latency_ms must be a number of milliseconds (e.g. 200), got "200"'),
    ({"latency_ms": True}, "latency_ms must be a number of milliseconds (e.g. 200), got true"),
    ({"latency_ms": 10_000_000}, "latency_ms must be <= 3600000, got 10000000"),
    ({"warmup_s": -1}, "warmup_s must be >= 0, got -1"),
    ({"cpu_ms": float("nan")}, "cpu_ms must be a finite number, got nan"),
    ({"hang": 1}, "hang must be true or false, got 1"),
    ({"hang": "yes"}, 'hang must be true or false, got "yes"'),
    ({"reset": 2}, "reset must be true, false or a rate between 0 and 1, got 2"),
    ({"crash_mid_response": "sometimes"},
     'crash_mid_response must be true, false or a rate between 0 and 1, got "sometimes"'),
    ({"error_status": 200}, "error_status must be an integer HTTP status between 400 and 599, got 200"),
    ({"error_status": 502.5}, "error_status must be an integer HTTP status between 400 and 599, got 502.5"),
])
def test_bad_values_say_what_to_change(patch, message):
    assert errors_of(patch) == [message]


def test_unknown_knob_suggests_the_right_one():
    [message] = errors_of({"latncy_ms": 5})
    assert message.startswith("unknown fault 'latncy_ms' (did you mean 'latency_ms'?)")
    assert "known faults: latency_ms, jitter_ms" in message


def test_not_an_object():
    assert errors_of([1, 2]) == [
        'faults must be a JSON object like {"latency_ms": 200}, got list']


def test_every_problem_is_reported_at_once():
    assert len(errors_of({"error_rate": 2, "hang": "x", "nope": 1, "latency_ms": 5})) == 3


def test_a_bad_patch_changes_nothing():
    faults, clock = state()
    faults.apply({"latency_ms": 50, "hang": True})
    before = faults.snapshot()
    with pytest.raises(FaultError):
        faults.apply({"latency_ms": 999, "error_rate": 1.5, "warmup_s": 10})
    assert faults.snapshot() == before
    assert faults.warmup_remaining(clock()) == 0


def test_rates_accept_flags_and_numbers():
    faults, _ = state()
    faults.apply({"reset": True, "crash_mid_response": 0.5, "error_rate": 1})
    assert faults.snapshot()["reset"] is True


def test_error_rate_is_reproducible_with_a_seed():
    faults, clock = state()
    faults.apply({"error_rate": 0.3, "error_status": 503})

    def run(seed):
        rng = random.Random(seed)
        return [faults.decide_app(clock(), rng).error_status for _ in range(1000)]

    first = run(42)
    assert first == run(42)
    assert set(first) == {None, 503}
    assert 250 < first.count(503) < 350


def test_certain_and_impossible_rates_draw_no_random_numbers():
    faults, clock = state()
    faults.apply({"error_rate": 1.0, "reset": False, "crash_mid_response": 0})
    rng = random.Random(1)
    before = rng.getstate()
    assert faults.decide_app(clock(), rng).error_status == 500
    assert rng.getstate() == before


def test_decision_order():
    faults, clock = state()
    rng = random.Random(0)
    faults.apply({"latency_ms": 100, "jitter_ms": 0, "cpu_ms": 5})
    d = faults.decide_app(clock(), rng)
    assert (d.delay_s, d.cpu_ms, d.error_status, d.crash) == (0.1, 5, None, False)
    faults.apply({"dependency_down": True, "error_rate": 1})
    assert faults.decide_app(clock(), rng).dependency_down  # wins over injected errors
    faults.apply({"hang": True})
    assert faults.decide_app(clock(), rng).hang
    faults.apply({"reset": True})
    assert faults.decide_app(clock(), rng).reset  # RST comes before hang
    faults.clear()
    faults.apply({"crash_mid_response": True})
    assert faults.decide_app(clock(), rng).crash


def test_jitter_stays_in_range():
    faults, clock = state()
    faults.apply({"latency_ms": 100, "jitter_ms": 50})
    rng = random.Random(3)
    delays = [faults.decide_app(clock(), rng).delay_s for _ in range(200)]
    assert all(0.1 <= d <= 0.15 for d in delays)
    assert max(delays) - min(delays) > 0.03


def test_warmup_runs_from_when_it_is_set():
    faults, clock = state()
    faults.apply({"warmup_s": 5})
    assert not faults.app_quiet(clock())
    d = faults.decide_app(clock(), random.Random(0))
    assert d.warming_up == 5
    assert faults.decide_ready(clock()).warming_up == 5
    assert faults.decide_live().warming_up == 0  # liveness: the process is alive
    clock.now += 2
    faults.apply({"latency_ms": 1})  # other changes do not restart the warm-up
    assert faults.warmup_remaining(clock()) == 3
    clock.now += 3
    assert faults.decide_app(clock(), random.Random(0)).warming_up == 0
    assert faults.decide_ready(clock()).warming_up == 0
    faults.apply({"latency_ms": 0})
    assert faults.app_quiet(clock())


def test_setting_warmup_to_zero_or_clearing_ends_it():
    faults, clock = state()
    faults.apply({"warmup_s": 5})
    faults.apply({"warmup_s": 0})
    assert faults.app_quiet(clock())
    faults.apply({"warmup_s": 5})
    faults.clear()
    assert faults.app_quiet(clock()) and faults.snapshot() == DEFAULTS


def test_dependency_down_fails_readiness_not_liveness():
    faults, clock = state()
    faults.apply({"dependency_down": True})
    assert faults.decide_ready(clock()).dependency_down
    live = faults.decide_live()
    assert not live.fail and not live.dependency_down
    assert faults.live_quiet()


def test_health_knobs():
    faults, clock = state()
    faults.apply({"health_latency_ms": 250, "health_fail": True})
    ready = faults.decide_ready(clock())
    assert (ready.delay_s, ready.fail) == (0.25, True)
    # Cached readiness: no dependency query per probe, the same verdict.
    cached = faults.decide_ready(clock(), cached=True)
    assert (cached.delay_s, cached.fail) == (0.0, True)
    assert faults.app_quiet(clock())  # health knobs leave app requests alone
    faults.apply({"live_fail": True, "live_latency_ms": 10})
    assert not faults.live_quiet()
    assert (faults.decide_live().fail, faults.decide_live().delay_s) == (True, 0.01)


def test_overload_sheds_what_is_beyond_max_in_flight():
    faults, clock = state()
    assert faults.decide_overload(1000) is None  # no limit by default
    faults.apply({"max_in_flight": 2})
    assert not faults.app_quiet(clock())  # the fast path must count requests now
    assert faults.decide_overload(1) is None
    assert faults.decide_overload(2) == ("reset", 0)  # dropped, as an overflowing server
    faults.apply({"shed": "429", "shed_retry_after_s": 2})
    assert faults.decide_overload(5) == ("status", 429)


def test_overload_knobs_say_what_they_take():
    assert errors_of({"max_in_flight": -1}) == [
        "max_in_flight must be a whole number from 0 to 100000, got -1"]
    assert errors_of({"max_in_flight": 2.5})[0].startswith("max_in_flight must be a whole")
    assert errors_of({"shed": "drop"}) == ['shed must be one of reset, 429, 503, got "drop"']
    assert errors_of({"shed": True}) == ["shed must be one of reset, 429, 503, got true"]
    assert validate_patch({"shed": 429}) == {"shed": "429"}  # YAML's bare 429
