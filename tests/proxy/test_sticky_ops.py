"""Sticky cookie attributes (Secure on TLS, HttpOnly and SameSite by default, each
configurable) and the truth of the app_cookie trace. Pure logic, generated variants."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from proxy import sticky
from proxy.balancers import PickContext
from proxy.config import ConfigError, StickyConfig, load_config
from proxy.events import EventBus
from proxy.model import BackendState
from proxy.runtime import PoolRuntime

NOW = 1_767_225_600.0


def backends():
    return {n: BackendState(name=n, host="127.0.0.1", port=9000 + i, pool="web")
            for i, n in enumerate(["b1", "b2", "b3"], start=1)}


def layer(**settings_):
    clock = lambda: NOW  # noqa: E731
    return sticky.create(StickyConfig(**settings_), "web", clock=clock, rng=random.Random(1),
                         wall_clock=clock)


def attributes(header: str) -> list[str]:
    return [a.strip() for a in header.split(";")[1:]]


def test_defaults_on_plain_http_and_on_tls():
    sl = layer(mode="cookie", secret="k")
    plain = attributes(sl.stick(PickContext(client_ip="127.0.0.1"), backends()["b1"]))
    assert plain == ["Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"]
    tls = attributes(sl.stick(PickContext(client_ip="127.0.0.1", tls=True), backends()["b1"]))
    assert tls == ["Path=/", "Max-Age=3600", "Secure", "HttpOnly", "SameSite=Lax"]


@settings(max_examples=200, deadline=None)
@given(secure=st.sampled_from(["auto", "always", "never"]), http_only=st.booleans(),
       same_site=st.sampled_from(["Lax", "Strict", "None", "off"]), tls=st.booleans(),
       path=st.from_regex(r"\A/[a-z0-9/]{0,10}\Z"),
       domain=st.none() | st.from_regex(r"\A[a-z]{1,8}\.test\Z"))
def test_every_attribute_follows_its_setting(secure, http_only, same_site, tls, path, domain):
    conf = dict(mode="cookie", secret="k", secure=secure, http_only=http_only,
                same_site=same_site, path=path, domain=domain)
    if same_site == "None" and secure == "never":
        with pytest.raises(ValueError):
            StickyConfig(**conf)
        return
    header = layer(**conf).stick(PickContext(client_ip="127.0.0.1", tls=tls), backends()["b2"])
    attrs = attributes(header)
    assert ("Secure" in attrs) == (secure == "always" or (secure == "auto" and tls))
    assert ("HttpOnly" in attrs) == http_only
    assert (f"SameSite={same_site}" in attrs) == (same_site != "off")
    assert not any(a.startswith("SameSite") for a in attrs) or same_site != "off"
    assert f"Path={path}" in attrs
    assert (f"Domain={domain}" in attrs) == (domain is not None)


@pytest.mark.parametrize("bad", [{"same_site": "lax"}, {"secure": "yes"}, {"path": "/a;b\r\n"},
                                 {"domain": "a b"}, {"cookie": "bad name"}])
def test_bad_cookie_attributes_are_refused(bad):
    with pytest.raises(ValueError):
        StickyConfig(mode="cookie", **bad)


# ---------------------------------------------------------------- app_cookie trace

def test_app_cookie_trace_says_when_a_session_was_pinned_not_learned():
    sl = layer(mode="app_cookie", cookie="SESSIONID")
    pool = backends()
    ctx = PickContext(client_ip="127.0.0.1", cookies={"SESSIONID": "abc"})
    assert sl.stick_note(ctx, pool["b2"]).startswith("SESSIONID=abc pinned to b2 by the proxy")
    sl.stick(ctx, pool["b2"])  # the proxy picked b2 for a session no backend announced
    target, why = sl.find(ctx, pool)
    assert target is pool["b2"]
    assert "learned" not in why and "pinned by the proxy" in why
    # Once b2 sends the cookie itself, it is learned.
    sl.observe_response(pool["b2"], ["SESSIONID=abc; Path=/"])
    assert sl.find(ctx, pool) == (pool["b2"], "SESSIONID=abc -> b2 (learned from its Set-Cookie)")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["request", "set_cookie", "clear"]),
                          st.sampled_from(["s1", "s2", "s3"]),
                          st.sampled_from(["b1", "b2", "b3"])), max_size=30))
def test_app_cookie_trace_is_true_over_any_history(steps):
    """Whatever happened before, "learned" is said only of a session whose current
    backend sent it in a Set-Cookie, and the routing event says when it was pinned."""
    sl = layer(mode="app_cookie", cookie="SID")
    pool = backends()
    truth: dict[str, tuple[str, bool]] = {}  # session -> (backend, learned from Set-Cookie)
    for action, session, name in steps:
        ctx = PickContext(client_ip="127.0.0.1", cookies={"SID": session})
        if action == "set_cookie":
            sl.observe_response(pool[name], [f"SID={session}; Path=/"])
            truth[session] = (name, True)
        elif action == "clear":
            sl.observe_response(pool[name], [f"SID={session}; Max-Age=0"])
            truth.pop(session, None)
        else:
            target, why = sl.find(ctx, pool)
            if session in truth:
                assert target is pool[truth[session][0]]
                assert ("learned from its Set-Cookie" in why) == truth[session][1], why
            else:
                assert target is None
                sl.stick(ctx, pool[name])
                truth[session] = (name, False)


def test_the_routing_event_carries_the_pin():
    config = load_config("""
listeners: {web: {bind: "127.0.0.1:0", routes: [all]}}
routes: {all: {forward: web}}
pools:
  web:
    sticky: {mode: app_cookie, cookie: SID}
    backends: [{name: b1, address: "127.0.0.1:1"}]
""")
    pool = PoolRuntime("web", config.pools["web"], EventBus(), lambda: 0.0, random.Random(1))
    choice = pool.choose(PickContext(client_ip="127.0.0.1", cookies={"SID": "zz"}))
    assert choice.sticky["hit"] is False
    assert choice.sticky["stored"].startswith("SID=zz pinned to b1 by the proxy")
    again = pool.choose(PickContext(client_ip="127.0.0.1", cookies={"SID": "zz"}))
    assert again.sticky["hit"] is True and "pinned by the proxy" in again.sticky["reason"]


def test_cookie_name_must_be_a_token():
    with pytest.raises(ConfigError):
        load_config("""
listeners: {web: {bind: "127.0.0.1:0", routes: [all]}}
routes: {all: {forward: web}}
pools: {web: {sticky: {mode: cookie, cookie: "a=b"}, backends: []}}
""")
