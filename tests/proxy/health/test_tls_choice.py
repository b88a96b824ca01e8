"""When an active check speaks TLS (pure), and what the config refuses about it."""
from __future__ import annotations

import pytest

from proxy.config import ConfigError, HealthCheckConfig, parse_config
from proxy.health.active import check_speaks_tls


def health(**kw) -> HealthCheckConfig:
    return HealthCheckConfig(**kw)


@pytest.mark.parametrize("settings, backend_tls, expected", [
    ({"type": "http"}, True, True),                  # the traffic port of a TLS pool
    ({"type": "grpc"}, True, True),
    ({"type": "http"}, False, False),                # a cleartext pool
    ({"type": "http", "port": 9100}, True, False),   # another port: cleartext by default
    ({"type": "http", "port": 9001}, True, True),    # the traffic port named again
    ({"type": "http", "port": 9100, "tls": True}, True, True),
    ({"type": "http", "tls": False}, True, False),
    ({"type": "tcp"}, True, False),                  # a tcp check only connects
])
def test_check_speaks_tls(settings, backend_tls, expected):
    assert check_speaks_tls(health(**settings), 9001, backend_tls) is expected


def config(pool: dict) -> dict:
    return {"listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["r"]}},
            "routes": {"r": {"match": {}, "forward": "p"}},
            "pools": {"p": {"backends": [{"name": "b1", "address": "127.0.0.1:9001"}],
                            **pool}}}


def errors(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.errors


def test_http_checks_of_tls_pools_are_accepted():
    parse_config(config({"tls": {}, "health": {"type": "http"}}))
    parse_config(config({"tls": {}, "health": {"type": "http", "port": 9100, "tls": True}}))


def test_tls_true_needs_tls_settings_for_every_backend():
    found = errors(config({"health": {"type": "http", "tls": True}}))
    assert found[0][0] == "pools.p.health.tls" and "pools.p.tls" in found[0][1]


def test_tls_only_for_http_and_grpc_checks():
    found = errors(config({"tls": {}, "health": {"type": "tcp", "tls": True}}))
    assert any("health.tls only applies to type: http or grpc" in msg for _, msg in found)


def test_a_checker_follows_its_pool_into_and_out_of_tls():
    """Adding or removing the pool's tls (health unchanged) restarts the check in the
    other mode; no loop needed: the manager syncs on apply."""
    from proxy.health.manager import HealthManager
    from tests.proxy.health.helpers import fake_server, make_runtime, pool_data

    plain = {"web": pool_data([("b1", 9001)], health={"type": "http"})}
    runtime = make_runtime(plain)
    manager = HealthManager(fake_server(runtime, upstream_tls={}))
    assert manager.checkers[("web", "b1")].tls_getter is None

    with_tls = {"web": pool_data([("b1", 9001)], health={"type": "http"},
                                 tls={"verify": False})}
    runtime.apply_data({"listeners": {}, "pools": with_tls}, "put_config", "config")
    assert manager.checkers[("web", "b1")].tls_getter is not None

    runtime.apply_data({"listeners": {}, "pools": plain}, "put_config", "config")
    assert manager.checkers[("web", "b1")].tls_getter is None
