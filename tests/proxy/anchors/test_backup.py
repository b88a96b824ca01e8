"""Backup backends (HAProxy `backup`, Envoy priorities): they serve only while the
primaries are below the pool's backup_threshold, and the routing event says why."""
from __future__ import annotations

import pytest

from proxy.config import ConfigError, load_config, parse_config
from proxy.events import PoolEvent
from proxy.model import Health
from proxy.runtime import Runtime, backup_decision
from proxy.balancers.base import PickContext
from tests.proxy.anchors.support import (
    Client, GatedBackend, admin_json, backend_entry, config, event, state)
from tests.proxy.edge.harness import EdgeProxy

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- the rule

def test_backup_decision_rule():
    assert backup_decision(0, 3, 0.0)[0] is True
    assert backup_decision(1, 3, 0.0) == (False, "1/3 primaries eligible: the backups stand "
                                                 "by until none is")
    used, why = backup_decision(1, 4, 0.5)
    assert used and "1/4 primaries eligible is below backup_threshold 50%" in why
    assert backup_decision(2, 4, 0.5)[0] is False  # at the threshold: not below
    assert backup_decision(0, 0, 0.5)[0] is True  # every primary removed or in maintenance


POOL = """
listeners: {web: {bind: "127.0.0.1:0", routes: [all]}}
routes: {all: {forward: web}}
pools:
  web:
    backup_threshold: %s
    backends:
      - {name: p1, address: "127.0.0.1:1"}
      - {name: p2, address: "127.0.0.1:2"}
      - {name: bk, address: "127.0.0.1:3", backup: true}
"""


def picks(runtime, n=6):
    pool = runtime.pools["web"]
    return [pool.choose(PickContext(client_ip="127.0.0.1", now=100.0)) for _ in range(n)]


def test_backups_join_below_the_threshold_and_events_say_when():
    runtime = Runtime(load_config(POOL % 0.6), clock=lambda: 100.0)
    seen = []
    runtime.bus.add_sink(seen.append)
    assert {c.backend.name for c in picks(runtime)} == {"p1", "p2"}
    assert picks(runtime)[0].backup["used"] is False
    pool = runtime.pools["web"]
    pool.set_health(pool.backends["p1"], Health.UNHEALTHY, "test")
    chosen = picks(runtime)
    assert {c.backend.name for c in chosen} == {"p2", "bk"}  # 1/2 < 60%: backups join
    assert "1/2 primaries eligible is below backup_threshold 60%" in chosen[0].backup["reason"]
    assert [e.what for e in seen if isinstance(e, PoolEvent)] == ["backup_on"]
    pool.set_health(pool.backends["p1"], Health.HEALTHY, "test")
    assert [e.what for e in seen if isinstance(e, PoolEvent)] == ["backup_on", "backup_off"]
    assert pool.state(100.0)["backup_active"] is False


def test_default_threshold_uses_backups_only_when_no_primary_is_left():
    runtime = Runtime(load_config(POOL % 0), clock=lambda: 100.0)
    pool = runtime.pools["web"]
    pool.set_health(pool.backends["p1"], Health.UNHEALTHY, "test")
    assert {c.backend.name for c in picks(runtime)} == {"p2"}
    pool.set_health(pool.backends["p2"], Health.UNHEALTHY, "test")
    chosen = picks(runtime)
    assert {c.backend.name for c in chosen} == {"bk"}
    assert chosen[0].backup["reason"] == ("no primary backend is eligible (0/2): the "
                                          "backups serve")


def test_a_pool_of_only_backups_is_refused():
    with pytest.raises(ConfigError) as err:
        load_config(POOL.replace('p1, address: "127.0.0.1:1"}',
                                 'p1, address: "127.0.0.1:1", backup: true}')
                    .replace('p2, address: "127.0.0.1:2"}',
                             'p2, address: "127.0.0.1:2", backup: true}') % 0)
    assert "every backend is a backup" in str(err.value)
    with pytest.raises(ConfigError):
        load_config(POOL % 1.5)


# ---------------------------------------------------------------- real traffic

def test_backup_serves_when_the_primary_is_in_maintenance_and_the_event_says_why():
    primary, backup = GatedBackend("primary", gated=False), GatedBackend("backup", gated=False)
    pools = {"p": {"backends": [backend_entry("b1", primary),
                                backend_entry("b2", backup, backup=True)]}}
    try:
        with EdgeProxy(config(pools)) as proxy:
            for i in range(3):
                assert Client(proxy.port(), f"/a{i}").result().body.startswith(b"primary ")
            ev = event(proxy, "a0")
            assert ev.backup["used"] is False and "stand by" in ev.backup["reason"]
            assert {c["name"]: c["backup"] for c in ev.candidates} == {"b1": False, "b2": True}
            down = config({"p": {"backends": [backend_entry("b1", primary, state="maintenance"),
                                              backend_entry("b2", backup, backup=True)]}})
            proxy.apply(down)
            reply = Client(proxy.port(), "/b").result()
            assert reply.status == 200 and reply.body == b"backup /b"
            ev = event(proxy, "b")
            assert ev.backend == "b2" and ev.backup["used"] is True
            assert ev.backup["reason"] == ("no primary backend is in service (each is draining "
                                           "or in maintenance): the backups serve")
            snapshot = admin_json(proxy, "/state")["pools"]["p"]
            assert snapshot["backup_active"] is True
            assert [b["backup"] for b in snapshot["backends"]] == [False, True]
            assert any(type(e).__name__ == "PoolEvent" and e.what == "backup_on"
                       for e in proxy.events)
            proxy.apply(config(pools))
            assert Client(proxy.port(), "/c").result().body == b"primary /c"
            assert state(proxy)["pools"]["p"]["backup_active"] is False
    finally:
        primary.close()
        backup.close()
