"""The L4/L7 and TLS-mode flips are pure: a config in, the whole new config out.

Each built config is handed to the proxy's own validation (`parse_config`, what PUT
/config runs), so these tests also pin which flips the proxy accepts and which it refuses,
and that its refusals name what the new mode cannot do.
"""
import copy

import pytest

from explainer.services import listener_modes as lm
from proxy.config import ConfigError, load_config, parse_config, to_data
from tests.explainer.parts import REPO


def example(name: str) -> dict:
    """An example config as GET /config?format=json gives it (every default spelled out)."""
    text = (REPO / "proxy" / "examples" / f"{name}.yaml").read_text()
    return to_data(load_config(text))


def refusals(config: dict) -> list[tuple[str, str]]:
    try:
        parse_config(config)
    except ConfigError as exc:
        return exc.errors
    return []


def same(a: dict, b: dict) -> bool:
    """Equal once validated (defaults filled in on both sides)."""
    return to_data(parse_config(a)) == to_data(parse_config(b))


def test_http_to_tcp_sends_every_connection_to_the_pool_its_routes_forward_to():
    config = example("default")
    change = lm.build(config, "web", "tcp", "none")
    web = change.config["listeners"]["web"]
    assert (web["protocol"], web["pool"], web["routes"], web["tls"]) == ("tcp", "web", [], None)
    assert web["bind"] == config["listeners"]["web"]["bind"]  # same socket, new layer
    assert change.config["routes"] == config["routes"]  # kept for the way back
    assert refusals(change.config) == []
    assert change.message.startswith("Listener web is now L4 (TCP): every connection goes to "
                                     "pool web")
    assert change.notes == ["it no longer uses route all (kept in the config for the way back)"]
    assert config["listeners"]["web"]["protocol"] == "http"  # the input is not touched


def test_tcp_to_http_reuses_the_catch_all_route_so_the_round_trip_is_exact():
    config = example("default")
    there = lm.build(config, "web", "tcp", "none").config
    back = lm.build(there, "web", "http", "none")
    assert back.config["listeners"]["web"]["routes"] == ["all"]
    assert same(back.config, config)
    assert back.notes == []


def test_tcp_to_http_creates_a_catch_all_route_when_there_is_none():
    config = example("l4")
    del config["pools"]["game"]["proxy_protocol"]
    for b in config["pools"]["game"]["backends"]:
        b["proxy_protocol"] = None
    change = lm.build(config, "game", "http", "none")
    assert change.config["listeners"]["game"]["routes"] == ["all"]
    assert change.config["routes"]["all"] == {"match": {}, "forward": "game"}
    assert change.notes == ["created route all"]
    assert refusals(change.config) == []
    # a name that is taken gets the listener's name instead
    config["routes"] = {"all": {"match": {"path_prefix": "/x"}, "respond": {"status": 200}}}
    change = lm.build(config, "game", "http", "none")
    assert change.config["listeners"]["game"]["routes"] == ["game-all"]


def test_what_l4_cannot_keep_is_named():
    config = example("default")
    config["pools"]["api"] = copy.deepcopy(config["pools"]["web"])
    config["pools"]["api"]["backends"] = [{"name": "a1", "address": "127.0.0.1:9101"}]
    config["routes"] = {
        "api": {"priority": 5, "match": {"path_prefix": "/api"}, "forward": "api"},
        "tea": {"priority": 5, "match": {"path_prefix": "/tea"}, "respond": {"status": 418}},
        "all": {"match": {}, "forward": "web"},
    }
    config["listeners"]["web"]["routes"] = ["tea", "api", "all"]
    change = lm.build(config, "web", "tcp", "none")
    assert change.config["listeners"]["web"]["pool"] == "web"
    lost = change.notes[1]
    assert lost.startswith("at L4 nothing of HTTP is seen, so these stop applying: ")
    assert "route tea answers by itself (path /tea)" in lost
    assert "route api (path /api -> pool api)" in lost
    assert refusals(change.config) == []


def test_without_a_catch_all_the_first_forwarded_pool_is_used_and_said():
    config = example("default")
    config["routes"] = {"only": {"match": {"methods": ["GET"]}, "forward": "web"}}
    config["listeners"]["web"]["routes"] = ["only"]
    change = lm.build(config, "web", "tcp", "none")
    assert change.config["listeners"]["web"]["pool"] == "web"
    assert any("the first one a route forwards to" in note for note in change.notes)


def test_a_listener_whose_routes_forward_nowhere_cannot_go_l4():
    config = example("default")
    config["routes"] = {"tea": {"match": {}, "respond": {"status": 418}}}
    config["listeners"]["web"]["routes"] = ["tea"]
    with pytest.raises(lm.ModeError) as err:
        lm.build(config, "web", "tcp", "none")
    assert err.value.errors[0]["path"] == "listeners.web.routes"
    assert "forwards to none" in err.value.message


def test_cookie_stickiness_on_l4_is_refused_by_the_proxy_in_its_own_words():
    config = example("sticky-cookie")
    change = lm.build(config, "web", "tcp", "none")
    [(path, message)] = refusals(change.config)
    assert path == "pools.web.sticky.mode"
    assert "sticky mode cookie needs HTTP cookies" in message
    assert "use sticky mode source_ip" in message


@pytest.mark.parametrize("source", ["header", "cookie", "uri"])
def test_hashing_on_http_things_on_l4_is_refused(source):
    config = example("consistent_hash")
    config["pools"]["web"]["balancer"]["hash_key"] = {"source": source, "name": "X-User"}
    change = lm.build(config, "web", "tcp", "none")
    [(path, message)] = refusals(change.config)
    assert path == "pools.web.balancer.hash_key.source"
    assert f"hashes on {source}, which only exists in HTTP" in message
    assert "hash on hash_key.source: client_ip" in message


def test_terminate_to_passthrough_turns_host_routes_into_sni_routes_and_back():
    config = example("tls-terminate")
    change = lm.build(config, "web", "tcp", "passthrough")
    web = change.config["listeners"]["web"]
    assert web["protocol"] == "tcp" and web["pool"] == "web" and web["routes"] == []
    # every certificate name (default first) and host route becomes a server name
    assert web["tls"] == {"mode": "passthrough", "unknown_sni": "default",
                          "sni": {"www.lab.test": "web", "api.lab.test": "web"}}
    assert refusals(change.config) == []
    assert "the backends must speak TLS themselves" in change.message

    back = lm.build(change.config, "web", "http", "terminate")
    assert back.config["listeners"]["web"]["routes"] == ["api", "all"]
    assert back.config["listeners"]["web"]["tls"]["certificates"] == [
        {"pki": "www.lab.test"}, {"pki": "api.lab.test"}]
    assert refusals(back.config) == []
    assert same(back.config, config)


def test_certificate_names_come_from_the_proxys_tls_view_when_given():
    config = example("tls-terminate")
    view = {"mode": "terminate", "certificates": [
        {"label": "api.lab.test", "names": ["api.lab.test"], "default": False},
        {"label": "www.lab.test", "names": ["www.lab.test", "*.www.lab.test"], "default": True}]}
    change = lm.build(config, "web", "tcp", "passthrough", view)
    assert list(change.config["listeners"]["web"]["tls"]["sni"]) == [
        "www.lab.test", "*.www.lab.test", "api.lab.test"]
    back = lm.build(change.config, "web", "http", "terminate")
    # a wildcard name has no lab-PKI file of its own: only the plain names come back
    assert [c["pki"] for c in back.config["listeners"]["web"]["tls"]["certificates"]] == [
        "www.lab.test", "api.lab.test"]


def test_passthrough_to_terminate_makes_host_routes_for_other_pools():
    config = example("tls-passthrough")
    change = lm.build(config, "edge", "http", "terminate")
    edge = change.config["listeners"]["edge"]
    assert edge["routes"] == ["edge-api.lab.test", "all"]
    assert change.config["routes"]["edge-api.lab.test"] == {"match": {"host": "api.lab.test"},
                                                            "forward": "api"}
    assert change.config["routes"]["all"] == {"match": {}, "forward": "www"}
    assert [c["pki"] for c in edge["tls"]["certificates"]] == ["www.lab.test", "api.lab.test"]
    assert refusals(change.config) == []
    assert "created routes edge-api.lab.test, all" in change.notes


def test_passthrough_to_plain_l4_says_which_names_lose_their_pool():
    change = lm.build(example("tls-passthrough"), "edge", "tcp", "none")
    assert change.config["listeners"]["edge"]["tls"] is None
    assert change.notes == ["without TLS passthrough there is no server name to route on, so "
                            "connections for api.lab.test (pool api until now) go to pool www too"]
    assert refusals(change.config) == []


def test_passthrough_without_a_default_pool_refuses_unknown_names():
    config = example("tls-passthrough")
    config["listeners"]["edge"]["pool"] = None
    config["listeners"]["edge"]["tls"]["unknown_sni"] = "refuse"
    back = lm.build(config, "edge", "http", "none")
    assert back.config["listeners"]["edge"]["routes"] == ["edge-www.lab.test",
                                                          "edge-api.lab.test"]
    there = lm.build(back.config, "edge", "tcp", "passthrough")
    assert there.config["listeners"]["edge"]["tls"]["unknown_sni"] == "refuse"
    assert refusals(there.config) == []


def test_the_modes_that_cannot_work_are_built_and_left_to_the_proxy_to_explain():
    config = example("tls-terminate")
    [(path, message)] = refusals(lm.build(config, "web", "tcp", "terminate").config)
    assert path == "listeners.web.tls.mode"
    assert message.startswith("a tcp listener does not terminate TLS")
    [(path, message)] = refusals(lm.build(config, "web", "http", "passthrough").config)
    assert path == "listeners.web.tls.mode"
    assert "no HTTP to route on" in message
    # a pool that re-encrypts cannot sit behind an L4 listener
    errors = refusals(lm.build(example("tls-reencrypt"), "web", "tcp", "passthrough").config)
    assert [p for p, _m in errors] == ["pools.web.tls"]
    # a PROXY protocol pool cannot sit behind an L7 listener
    errors = refusals(lm.build(example("l4"), "game", "http", "none").config)
    assert [p for p, _m in errors] == ["pools.game.proxy_protocol"]


def test_terminating_without_any_certificate_in_sight_says_why():
    with pytest.raises(lm.ModeError) as err:
        lm.build(example("default"), "web", "http", "terminate")
    assert err.value.errors[0]["path"] == "listeners.web.tls"
    assert "needs a certificate" in err.value.message and "pki init" in err.value.message
    # ...but another listener's certificates are a piece the config has
    config = example("default")
    config["listeners"]["secure"] = copy.deepcopy(example("tls-terminate")["listeners"]["web"])
    config["listeners"]["secure"]["bind"] = "127.0.0.1:8443"
    config["listeners"]["secure"]["routes"] = ["all"]
    change = lm.build(config, "web", "http", "terminate")
    assert [c["pki"] for c in change.config["listeners"]["web"]["tls"]["certificates"]] == [
        "www.lab.test", "api.lab.test"]
    assert refusals(change.config) == []


def test_no_change_and_bad_input():
    change = lm.build(example("default"), "web", "http", "none")
    assert change.unchanged and "already L7 (HTTP) with no TLS" in change.message
    with pytest.raises(lm.ModeError) as err:
        lm.build(example("default"), "nope", "tcp", "none")
    assert err.value.status == 404 and "listeners: web" in err.value.message
    with pytest.raises(lm.ModeError):
        lm.build(example("default"), "web", "udp", "none")
    with pytest.raises(lm.ModeError):
        lm.build(example("default"), "web", "tcp", "quic")
