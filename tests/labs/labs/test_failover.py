"""The balancer pair's failover logic without sockets: heartbeats, the DNS zone's health,
a client's resolver cache, and the load report's sum (labs/framework/failover.py, pair.py)."""
import pytest

from labs.framework.failover import (BACKUP, MASTER, HeartbeatSettings, ResolverCache,
                                     Standby, ZoneHealth)
from labs.framework.pair import total_loads, with_floating


def beats(standby, answers, start=0.0):
    """Feed one answer per interval from ``start``; returns the decisions (None removed)."""
    out, now = [], start
    for ok in answers:
        now = standby.next_due
        d = standby.heard(now, ok)
        if d is not None:
            out.append(d)
    return out


def test_the_standby_takes_over_after_dead_after_of_silence_not_before():
    sb = Standby(HeartbeatSettings(interval=0.5, dead_after=1.5), now=0.0, peer="lb1",
                 address="vip")
    assert sb.due(0.0) and sb.heard(0.0, True) is None and not sb.due(0.4) and sb.due(0.5)
    decisions = beats(sb, [False, False, False, False])  # at 0.5, 1.0, 1.5, 2.0
    suspect, takeover = decisions
    assert (suspect.at, suspect.old, suspect.new, suspect.missed) == (0.5, BACKUP, BACKUP, 1)
    assert "lb1 missed a heartbeat" in suspect.why and "1.5 s of silence" in suspect.why
    # Silence since the last answer (0.0) reaches 1.5 s at the third miss.
    assert (takeover.at, takeover.new, takeover.missed) == (1.5, MASTER, 3)
    assert takeover.why == ("no heartbeat from lb1 for 1.50 s (3 missed at 0.5 s; dead "
                            "after 1.5 s): take over vip")
    assert sb.role == MASTER


def test_an_answer_after_misses_resets_the_count_and_says_so():
    sb = Standby(HeartbeatSettings(interval=0.1, dead_after=0.3), now=0.0, peer="lb1")
    decisions = beats(sb, [True, False, False, True, False, False, False])
    assert [d.new for d in decisions] == [BACKUP, BACKUP, BACKUP, MASTER]
    assert "answered again after 2 missed" in decisions[1].why
    assert decisions[-1].at == pytest.approx(0.6) and decisions[-1].missed == 3


def test_a_master_does_not_hand_the_address_back():
    sb = Standby(HeartbeatSettings(interval=0.1, dead_after=0.1), now=0.0)
    beats(sb, [False, False])  # silent from 0.0 to 0.1
    assert sb.role == MASTER
    assert sb.heard(5.0, True) is None and sb.role == MASTER  # no preemption


def test_heartbeat_settings_that_cannot_work_are_named():
    assert HeartbeatSettings(0.1, 0.3).problems() == []
    paths = [p for p, _ in HeartbeatSettings(0.5, 0.2).problems()]
    assert paths == ["lab.heartbeat.dead_after_s"]
    assert [p for p, _ in HeartbeatSettings(0, 1).problems()] == ["lab.heartbeat.interval_s"]


def test_the_zone_drops_a_node_after_fall_failures_and_adds_it_after_rise():
    zone = ZoneHealth(["lb1", "lb2"], fall=2, rise=3)
    assert zone.checked("lb1", False) is None and zone.answer() == ["lb1", "lb2"]
    change = zone.checked("lb1", False)
    assert change.serving is False and zone.answer() == ["lb2"]
    assert change.why == "lb1 failed 2 health check(s) in a row: out of the answer"
    assert [zone.checked("lb1", True) for _ in range(2)] == [None, None]
    assert zone.checked("lb1", True).serving and zone.answer() == ["lb1", "lb2"]
    zone.checked("lb2", False)
    assert zone.checked("lb2", True) is None  # one blip: the streak starts again
    assert zone.checked("lb2", False) is None and zone.answer() == ["lb1", "lb2"]


def test_a_cached_answer_is_used_until_its_ttl_runs_out():
    zone = [["lb1", "lb2"]]
    cache = ResolverCache(ttl=3.0)
    assert cache.lookup(0.0, lambda: zone[0]) == ["lb1", "lb2"]
    zone[0] = ["lb2"]  # the zone dropped lb1 ...
    assert cache.lookup(2.9, lambda: zone[0]) == ["lb1", "lb2"]  # ... the client has not
    assert cache.lookup(3.0, lambda: zone[0]) == ["lb2"] and cache.queries == 2
    with pytest.raises(ValueError):
        ResolverCache(-1)


def test_the_floating_listener_is_a_copy_of_the_service_listener():
    config = {"listeners": {"web": {"bind": "127.0.0.1:1", "protocol": "http",
                                    "routes": ["all"]}}}
    out = with_floating(config, "web", "vip", "127.0.0.1:2")
    assert out["listeners"]["vip"] == {"bind": "127.0.0.1:2", "protocol": "http",
                                       "routes": ["all"]}
    assert config["listeners"] == {"web": {"bind": "127.0.0.1:1", "protocol": "http",
                                           "routes": ["all"]}}


def test_the_load_report_sums_every_balancers_own_counts():
    def state(**counts):
        return {"pools": {"web": {"backends": [{"name": n, "outstanding": c}
                                               for n, c in counts.items()]}}}
    assert total_loads([state(b1=2, b2=0), state(b1=1, b2=4), {"pools": {}}], "web") == \
        {"b1": 3, "b2": 4}


def test_the_load_report_is_the_mean_over_its_interval():
    from labs.framework.pair import average_loads

    assert average_loads([{"b1": 3, "b2": 0}, {"b1": 0, "b2": 0}, {"b1": 1, "b2": 1}]) == \
        {"b1": 1.33, "b2": 0.33}
    assert average_loads([]) == {}
