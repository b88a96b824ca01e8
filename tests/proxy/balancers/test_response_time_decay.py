"""least_response_time forgets: a backend that was slow and recovered gets
traffic again (time-weighted average, probes of backends with no recent sample)."""
from __future__ import annotations

from collections import Counter

from hypothesis import assume, given, settings, strategies as st

from proxy.config import BalancerConfig
from proxy.balancers import create
from proxy.model import BackendState
from tests.proxy.balancers.support import backends, ctx


def lrt(pool, **knobs):
    return create(BalancerConfig(algorithm="least_response_time", **knobs), pool)


def run(bal, pool, latency_of, start: float, seconds: float, step: float) -> Counter:
    """Sequential requests every `step` seconds on a fake clock; each finishes at once
    with latency_of(name, now)."""
    counts: Counter = Counter()
    now = start
    while now < start + seconds:
        chosen = bal.pick(ctx(now=now), pool).backend
        chosen.request_started()
        chosen.request_finished(latency_of(chosen.name, now), failed=False, now=now)
        counts[chosen.name] += 1
        now += step
    return counts


@settings(max_examples=100, deadline=None)
@given(slow_ms=st.integers(100, 5000), fast_ms=st.integers(5, 50),
       recovered_ms=st.integers(1, 4), step=st.sampled_from([0.05, 0.2, 1.0]),
       slow_for=st.integers(10, 60), probe_after=st.sampled_from(["1s", "5s", "10s"]))
def test_a_recovered_backend_gets_traffic_again(slow_ms, fast_ms, recovered_ms, step,
                                                 slow_for, probe_after):
    pool = backends("b1", "b2")
    bal = lrt(pool, probe_after=probe_after)
    recovered_at = float(slow_for)

    def latency(name, now):
        if name == "b1":
            return fast_ms / 1000
        return (slow_ms if now < recovered_at else recovered_ms) / 1000

    wait = BalancerConfig(probe_after=probe_after).probe_after
    # With a request per probe_after or fewer, every pick is a probe: nothing to learn.
    assume(step * 4 <= wait)
    before = run(bal, pool, latency, 0.0, slow_for, step)
    assert before["b1"] > 2 * before["b2"]  # while slow, b2 is avoided
    after = run(bal, pool, latency, recovered_at, 3 * wait + 10 * step, step)
    # Now faster than b1, b2 must be found again and take most of the traffic.
    assert after["b2"] > after["b1"], (before, after)


def test_an_old_average_drifts_toward_the_pool():
    pool = backends("b1", "b2", "b3")
    for b, ms in zip(pool, (10.0, 12.0, 900.0)):
        b.ewma_ms, b.ewma_at = ms, 0.0
    pool[0].ewma_at = pool[1].ewma_at = 95.0  # recent
    bal = lrt(pool, decay_time="10s", probe_after="1h")
    decision = bal.pick(ctx(now=100.0), pool)
    decayed = decision.inputs["decayed_ms"]
    assert decayed["b3"] < 900 * 0.01 + 11 * 0.99 + 1  # trust exp(-10) ~ 0: like the others
    assert decision.backend.name == "b1"


def test_a_backend_with_no_recent_sample_is_probed_once():
    pool = backends("b1", "b2")
    pool[0].ewma_ms, pool[0].ewma_at = 10.0, 100.0
    pool[1].ewma_ms, pool[1].ewma_at = 800.0, 0.0
    bal = lrt(pool, probe_after="10s")
    decision = bal.pick(ctx(now=100.0), pool)
    assert decision.backend.name == "b2" and decision.inputs["probe"] == "b2"
    assert decision.inputs["stale"] == {"b2": 100}
    assert pool[1].ewma_ms == 0.0  # forgotten: the probe's answer starts a new average
    pool[1].outstanding = 1  # the probe is in flight: no second one
    assert bal.pick(ctx(now=100.0), pool).backend.name == "b1"


def test_the_average_is_over_time_not_over_samples():
    b = BackendState(name="b", host="127.0.0.1", port=1, pool="p")
    for i in range(50):  # a burst of slow samples close together
        b.record_latency(500.0, now=i * 0.001)
    b.record_latency(5.0, now=100.0)  # then, long after, one fast one
    assert b.ewma_ms < 10.0
    c = BackendState(name="c", host="127.0.0.1", port=1, pool="p")
    c.record_latency(500.0, now=0.0)
    c.record_latency(5.0, now=0.001)  # close together: ordinary smoothing
    assert 300 < c.ewma_ms < 400
