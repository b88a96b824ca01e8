"""What the config says about HTTP/2, gRPC and UDP: the switches and what they refuse."""
from __future__ import annotations

import pytest

from proxy.config import ConfigError, parse_config, to_data


def config(listener: dict | None = None, pool: dict | None = None) -> dict:
    return {"listeners": {"web": {"bind": "127.0.0.1:0", "routes": ["all"], **(listener or {})}},
            "routes": {"all": {"forward": "p"}},
            "pools": {"p": {"backends": [{"name": "a", "address": "127.0.0.1:1"}],
                            **(pool or {})}}}


def errors(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.errors


TLS = {"certificates": [{"pki": "www.lab.test"}]}


def test_http2_true_takes_the_defaults_and_round_trips():
    parsed = parse_config(config({"http2": True}))
    settings = parsed.listeners["web"].http2
    assert settings.max_concurrent_streams == 100 and settings.max_resets == 100
    assert parse_config(to_data(parsed)) == parsed
    assert parse_config(config({"http2": False})).listeners["web"].http2 is None


def test_alpn_h2_needs_http2():
    found = errors(config({"tls": {**TLS, "alpn": ["h2", "http/1.1"]}}))
    assert found == [("listeners.web.tls.alpn", found[0][1])]
    assert "http2: true" in found[0][1]
    parse_config(config({"http2": True, "tls": {**TLS, "alpn": ["h2", "http/1.1"]}}))


def test_http2_only_on_http_listeners():
    data = config()
    data["listeners"]["l4"] = {"bind": "127.0.0.1:0", "protocol": "tcp", "pool": "p",
                               "http2": True}
    assert any(path == "listeners.l4.http2" for path, _ in errors(data))


def test_caps_are_bounded():
    found = errors(config({"http2": {"max_resets": 0}}))
    assert found[0][0] == "listeners.web.http2.max_resets"


def test_grpc_check_needs_an_h2_pool():
    found = errors(config(pool={"health": {"type": "grpc"}}))
    assert found[0][0] == "pools.p.health.type" and "protocol: h2" in found[0][1]
    parse_config(config(pool={"protocol": "h2", "health": {"type": "grpc"}}))


def test_h2_tls_pools_check_grpc_over_tls_or_on_a_cleartext_port():
    parse_config(config(pool={"protocol": "h2", "tls": {"verify": False}}))
    parse_config(config(pool={"protocol": "h2", "tls": {}, "health": {"type": "tcp"}}))
    parse_config(config(pool={"protocol": "h2", "tls": {}, "health": {"type": "grpc"}}))
    parse_config(config(pool={"protocol": "h2", "tls": {},
                              "health": {"type": "grpc", "port": 9100}}))
