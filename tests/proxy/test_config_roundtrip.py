"""Any config the proxy runs round-trips: GET /config's export, sent back as
PUT /config, validates into the very same Config.

Checked on every shipped example and on hypothesis-generated variations of
them (algorithms and their knobs, sticky modes and cookie attributes, health
and outlier settings, durations of every unit, TLS passthrough listeners,
IPv6 addresses, backend states), through plain data, YAML text (what GET
/config sends by default) and JSON text (?format=json).
"""
from __future__ import annotations

import copy
import json
import pathlib

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from proxy.balancers import REGISTRY
from proxy.configtext import dump_yaml
from proxy.config import ConfigError, load_config, load_config_file, parse_config, to_data

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "proxy" / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
RAW = {p.name: yaml.safe_load(p.read_text()) for p in FILES}
VARIED = settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def assert_round_trips(config) -> None:
    data = to_data(config)
    again = parse_config(copy.deepcopy(data))
    assert again == config
    assert to_data(again) == data
    # GET /config as YAML (the default) and as JSON, sent back as PUT /config.
    assert load_config(dump_yaml(data)) == config
    assert load_config(json.dumps(data), as_json=True) == config


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_example_round_trips(path):
    assert_round_trips(load_config_file(str(path)))


# ---------------------------------------------------------------- variations

durations = st.one_of(
    st.integers(0, 10_000).map(lambda n: f"{n}ms"),
    st.integers(1, 3600).map(lambda n: f"{n}s"),
    st.tuples(st.integers(0, 59), st.integers(1, 999)).map(lambda t: f"{t[0]}.{t[1]}s"),
    st.integers(1, 120).map(lambda n: f"{n}m"),
    st.integers(1, 48).map(lambda n: f"{n}h"),
    st.tuples(st.integers(0, 999), st.integers(1, 999_999)).map(lambda t: f"{t[0]}.{t[1]}ms"),
)
probe_intervals = durations.filter(lambda d: d != "0ms" and not d.endswith("ms")
                                   or d.endswith("ms") and float(d[:-2]) >= 10)
primes = st.sampled_from([7, 251, 65537, 1009, 4099, 65521])
hash_keys = st.one_of(
    st.just({"source": "client_ip"}), st.just({"source": "uri"}),
    st.builds(lambda s, n: {"source": s, "name": n}, st.sampled_from(["header", "cookie"]),
              st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z")))


@st.composite
def balancers(draw):
    algorithm = draw(st.sampled_from(sorted(REGISTRY)))
    out = {"algorithm": algorithm}
    if draw(st.booleans()):
        out["hash_key"] = draw(hash_keys)
    if algorithm == "maglev":
        out["table_size"] = draw(primes)
    if algorithm == "consistent_hash":
        out["virtual_nodes"] = draw(st.integers(1, 10_000))
    if algorithm == "consistent_hash_bounded":
        out["load_factor"] = draw(st.floats(1.01, 10.0, allow_nan=False).map(lambda f: round(f, 3)))
    if algorithm == "power_of_two_choices":
        out["choices"] = draw(st.integers(2, 16))
    return out


@st.composite
def stickies(draw):
    mode = draw(st.sampled_from(["cookie", "app_cookie", "source_ip"]))
    out = {"mode": mode, "ttl": draw(durations.filter(lambda d: d not in ("0ms",)))}
    if draw(st.booleans()):
        out["cookie"] = draw(st.from_regex(r"\A[A-Za-z][A-Za-z0-9_]{0,20}\Z"))
    if mode == "cookie":
        secure = draw(st.sampled_from(["auto", "always", "never"]))
        out.update(secure=secure, http_only=draw(st.booleans()),
                   same_site=draw(st.sampled_from(["Lax", "Strict", "off"]
                                                  + ([] if secure == "never" else ["None"]))))
        if draw(st.booleans()):
            out["secret"] = draw(st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF),
                                         min_size=1, max_size=30))
    else:
        out["table_size"] = draw(st.integers(1, 10_000_000))
    return out


@st.composite
def healths(draw):
    kind = draw(st.sampled_from(["http", "tcp"]))
    out = {"type": kind, "interval": draw(probe_intervals),
           "timeout": draw(durations.filter(lambda d: d != "0ms")),
           "healthy_threshold": draw(st.integers(1, 100)),
           "unhealthy_threshold": draw(st.integers(1, 100)),
           "jitter": draw(durations), "grace": draw(durations)}
    if kind == "http":
        out["path"] = draw(st.from_regex(r"\A/[a-z0-9/_.?=&-]{0,30}\Z"))
        out["expect_status"] = draw(st.lists(st.integers(100, 599), min_size=1, max_size=5))
        out["reuse_connection"] = draw(st.booleans())
    return out


@st.composite
def outliers(draw):
    return {"consecutive_5xx": draw(st.none() | st.integers(1, 100_000)),
            "failure_window": draw(durations), "base_ejection": draw(durations),
            "max_ejection": draw(durations),
            "max_ejection_percent": draw(st.integers(0, 100))}


addresses = st.one_of(
    st.tuples(st.integers(1, 254), st.integers(1, 65535)).map(lambda t: f"127.0.0.{t[0]}:{t[1]}"),
    st.integers(1, 65535).map(lambda p: f"[::1]:{p}"),
    st.integers(1, 65535).map(lambda p: f"localhost:{p}"),
)


@st.composite
def variations(draw):
    name = draw(st.sampled_from(sorted(RAW)))
    data = copy.deepcopy(RAW[name])
    for pool in data.get("pools", {}).values():
        if draw(st.booleans()):
            pool["balancer"] = draw(balancers())
        if draw(st.booleans()):
            pool["sticky"] = draw(stickies())
        if draw(st.booleans()):
            pool["health"] = draw(healths())
        if draw(st.booleans()):
            pool["outlier"] = draw(outliers())
        for key in ("slow_start", "deregistration_delay"):
            if draw(st.booleans()):
                pool[key] = draw(durations)
        if draw(st.booleans()):
            pool["timeouts"] = {"connect": draw(durations), "response_header": draw(durations)}
        if draw(st.booleans()):
            pool["panic_threshold"] = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]))
        for backend in pool.get("backends", []):
            if draw(st.booleans()):
                backend["weight"] = draw(st.integers(0, 1000))
            if draw(st.booleans()):
                backend["state"] = draw(st.sampled_from(["active", "draining", "maintenance"]))
            if draw(st.booleans()):
                backend["address"] = draw(addresses)
    if draw(st.booleans()) and data.get("pools"):
        # A TLS passthrough listener next to whatever the example has.
        pool = draw(st.sampled_from(sorted(data["pools"])))
        data["listeners"]["pt"] = {
            "bind": draw(addresses), "protocol": "tcp", "pool": pool,
            "tls": {"mode": "passthrough", "sni": {"www.lab.test": pool},
                    "unknown_sni": draw(st.sampled_from(["default", "refuse"]))}}
    for listener in data["listeners"].values():
        if draw(st.booleans()):
            listener["timeouts"] = {"client_header": draw(durations),
                                    "tunnel_idle": draw(durations)}
    if draw(st.booleans()):
        data.setdefault("admin", {})["token"] = draw(st.from_regex(r"\A[!-~]{1,40}\Z"))
    return data


@VARIED
@given(variations())
def test_variations_of_the_examples_round_trip(data):
    try:
        config = parse_config(data)
    except ConfigError:
        assume(False)  # an impossible combination (e.g. a cookie-sticky pool at L4)
        return
    assert_round_trips(config)


def test_passthrough_export_is_accepted_back():
    """The export writes terminate-only settings at their defaults; they are not
    settings the user gave, so passthrough accepts them."""
    config = load_config_file(str(EXAMPLES / "tls-passthrough.yaml"))
    data = to_data(config)
    tls = next(l["tls"] for l in data["listeners"].values() if l.get("tls"))
    assert tls["mode"] == "passthrough" and tls["alpn"] == ["http/1.1"]
    assert parse_config(data) == config
    tls["min_version"] = "1.3"  # a real terminate-only setting is still refused
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "min_version" in info.value.lines()[0]


@pytest.mark.parametrize("secret", ["a\x85b", "\x85", "line\u2028sep", "para\u2029sep"])
def test_a_secret_with_a_unicode_line_break_survives_get_then_put(secret):
    """PyYAML folds a raw NEL in single quotes into a space; GET /config must not."""
    config = load_config_file(str(EXAMPLES / "sticky-cookie.yaml"))
    data = to_data(config)
    pool = next(p for p in data["pools"].values() if p.get("sticky"))
    pool["sticky"]["secret"] = secret
    config = parse_config(copy.deepcopy(data))
    assert load_config(dump_yaml(to_data(config))) == config
