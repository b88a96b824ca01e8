"""The sticky layer, pure logic: real StickyConfig and BackendState, a fake clock."""
import random

import pytest

from proxy import sticky
from proxy.balancers import PickContext
from proxy.config import StickyConfig
from proxy.model import BackendState

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeClock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def backends():
    return {n: BackendState(name=n, host="127.0.0.1", port=9000 + i, pool="web")
            for i, n in enumerate(["b1", "b2", "b3", "b4"], start=1)}


def layer(clock, pool="web", **settings):
    return sticky.create(StickyConfig(**settings), pool, clock=clock, rng=random.Random(1),
                         wall_clock=clock)


def request(ip="127.0.0.5", cookies=None):
    return PickContext(client_ip=ip, cookies=cookies or {})


def cookie_from(set_cookie: str) -> dict:
    name, _, rest = set_cookie.partition("=")
    return {name: rest.split(";")[0]}


# ---------------------------------------------------------------- cookie

def test_cookie_round_trip(clock, backends):
    sl = layer(clock, mode="cookie", secret="s3cret", ttl="1h")
    assert sl.mode == "cookie"
    assert sl.find(request(), backends) == (None, "no sticky cookie")
    header = sl.stick(request(), backends["b2"])
    value = cookie_from(header)["LBSTICKY"]
    name, expires, signature = value.split(".")
    assert (name, int(expires)) == ("b2", int(NOW) + 3600)
    assert len(signature) == 32 and int(signature, 16) >= 0
    assert header == (f"LBSTICKY={value}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax")
    assert sl.find(request(cookies={"LBSTICKY": value}), backends) == (backends["b2"],
                                                                      "cookie names b2")


def test_cookie_survives_a_restart_with_a_configured_secret(clock, backends):
    header = layer(clock, mode="cookie", secret="s3cret").stick(request(), backends["b3"])
    again = layer(clock, mode="cookie", secret="s3cret")
    assert again.find(request(cookies=cookie_from(header)), backends)[0] is backends["b3"]


def test_cookie_from_another_secret_or_pool_is_ignored(clock, backends):
    header = layer(clock, mode="cookie").stick(request(), backends["b3"])  # random secret
    other = layer(clock, mode="cookie")
    invalid = "cookie signature invalid: ignored (forged or from another secret)"
    assert other.find(request(cookies=cookie_from(header)), backends) == (None, invalid)
    header = layer(clock, pool="api", mode="cookie", secret="x").stick(request(), backends["b3"])
    same_secret_other_pool = layer(clock, pool="web", mode="cookie", secret="x")
    assert same_secret_other_pool.find(request(cookies=cookie_from(header)), backends) == \
        (None, invalid)


@pytest.mark.parametrize("tamper", [
    lambda n, e, s: f"b3.{e}.{s}",  # change the backend name
    lambda n, e, s: f"{n}.{int(e) + 86400}.{s}",  # extend the expiry
    lambda n, e, s: f"{n}.{e}.{s[:-1]}{'0' if s[-1] != '0' else '1'}",  # flip the signature
    lambda n, e, s: f"{n}.{e}.",  # drop the signature
])
def test_forged_cookie_is_ignored(clock, backends, tamper):
    sl = layer(clock, mode="cookie", secret="s3cret")
    value = cookie_from(sl.stick(request(), backends["b2"]))["LBSTICKY"]
    forged = tamper(*value.split("."))
    assert sl.find(request(cookies={"LBSTICKY": forged}), backends) == \
        (None, "cookie signature invalid: ignored (forged or from another secret)")


@pytest.mark.parametrize("garbage", ["", "b2", "b2.soon.abcd", "....", "b2.123", "b2.\u00b2.abcd"])
def test_malformed_cookie_is_ignored(clock, backends, garbage):
    sl = layer(clock, mode="cookie", secret="s3cret")
    backend, reason = sl.find(request(cookies={"LBSTICKY": garbage}), backends)
    assert backend is None
    assert reason in ("cookie malformed: ignored",
                      "cookie signature invalid: ignored (forged or from another secret)")


def test_expired_cookie_is_ignored(clock, backends):
    sl = layer(clock, mode="cookie", secret="s3cret", ttl="60s")
    cookies = cookie_from(sl.stick(request(), backends["b2"]))
    clock.advance(59)
    assert sl.find(request(cookies=cookies), backends)[0] is backends["b2"]
    clock.advance(1)
    assert sl.find(request(cookies=cookies), backends) == (None, "cookie expired")


def test_cookie_naming_a_removed_backend(clock, backends):
    sl = layer(clock, mode="cookie", secret="s3cret")
    cookies = cookie_from(sl.stick(request(), backends["b4"]))
    del backends["b4"]
    assert sl.find(request(cookies=cookies), backends) == \
        (None, "cookie names b4, no longer in this pool")


def test_backend_names_with_dots(clock):
    pool = {"web.1": BackendState(name="web.1", host="127.0.0.1", port=9001, pool="web")}
    sl = layer(clock, mode="cookie", secret="s3cret")
    cookies = cookie_from(sl.stick(request(), pool["web.1"]))
    assert sl.find(request(cookies=cookies), pool)[0] is pool["web.1"]


def test_custom_cookie_name(clock, backends):
    sl = layer(clock, mode="cookie", cookie="SRV", secret="k")
    header = sl.stick(request(), backends["b1"])
    assert header.startswith("SRV=b1.")
    assert sl.find(request(cookies=cookie_from(header)), backends)[0] is backends["b1"]


# ---------------------------------------------------------------- app_cookie

def test_app_cookie_learns_from_set_cookie(clock, backends):
    sl = layer(clock, mode="app_cookie", cookie="SESSIONID", ttl="10m")
    assert sl.find(request(), backends) == (None, "no SESSIONID cookie")
    assert sl.find(request(cookies={"SESSIONID": "abc"}), backends) == \
        (None, "SESSIONID=abc not in the table (no backend has set it yet)")
    learned = sl.observe_response(backends["b3"], ["theme=dark; Path=/",
                                                   "SESSIONID=abc; Path=/; HttpOnly"])
    assert learned == "learned SESSIONID=abc -> b3"
    assert sl.find(request(cookies={"SESSIONID": "abc"}), backends) == \
        (backends["b3"], "SESSIONID=abc -> b3 (learned from its Set-Cookie)")
    # another client's session is independent
    assert sl.find(request(cookies={"SESSIONID": "xyz"}), backends)[0] is None
    # stick() adds no cookie of its own
    assert sl.stick(request(cookies={"SESSIONID": "xyz"}), backends["b1"]) is None


def test_app_cookie_entries_expire_after_ttl_of_inactivity(clock, backends):
    sl = layer(clock, mode="app_cookie", cookie="SESSIONID", ttl="10m")
    sl.observe_response(backends["b2"], ['SESSIONID="q1"; Path=/'])  # quoted value
    clock.advance(500)
    assert sl.find(request(cookies={"SESSIONID": "q1"}), backends)[0] is backends["b2"]
    clock.advance(599)  # the hit above refreshed it
    assert sl.find(request(cookies={"SESSIONID": "q1"}), backends)[0] is backends["b2"]
    clock.advance(600)
    assert sl.find(request(cookies={"SESSIONID": "q1"}), backends) == \
        (None, "table entry expired")


def test_app_cookie_accepts_header_bytes(clock, backends):
    sl = layer(clock, mode="app_cookie", cookie="SESSIONID")
    sl.observe_response(backends["b4"], [b"SESSIONID=raw; Path=/"])
    assert sl.find(request(cookies={"SESSIONID": "raw"}), backends)[0] is backends["b4"]


def test_app_cookie_logout_clears_the_entry(clock, backends):
    sl = layer(clock, mode="app_cookie", cookie="SESSIONID")
    sl.observe_response(backends["b2"], ["SESSIONID=abc"])
    assert sl.observe_response(backends["b2"], ["SESSIONID=abc; Max-Age=0"]) == \
        "SESSIONID cleared by b2"
    assert sl.find(request(cookies={"SESSIONID": "abc"}), backends)[0] is None
    sl.observe_response(backends["b2"], ["SESSIONID=def"])
    sl.observe_response(backends["b2"], ["SESSIONID=def; Expires=Thu, 01 Jan 1970 00:00:00 GMT"])
    assert sl.find(request(cookies={"SESSIONID": "def"}), backends)[0] is None


def test_app_cookie_repick_restick(clock, backends):
    """A session whose backend is gone is re-picked and then stays on the new one."""
    sl = layer(clock, mode="app_cookie", cookie="SESSIONID")
    sl.observe_response(backends["b2"], ["SESSIONID=abc"])
    del backends["b2"]
    assert sl.find(request(cookies={"SESSIONID": "abc"}), backends) == \
        (None, "SESSIONID=abc -> b2, no longer in this pool")
    sl.stick(request(cookies={"SESSIONID": "abc"}), backends["b4"])
    assert sl.find(request(cookies={"SESSIONID": "abc"}), backends)[0] is backends["b4"]


def test_app_cookie_table_is_bounded(clock, backends):
    sl = layer(clock, mode="app_cookie", cookie="SESSIONID", table_size=2)
    for value in ("s1", "s2", "s3"):
        sl.observe_response(backends["b1"], [f"SESSIONID={value}"])
    assert len(sl.table) == 2 and "s1" not in sl.table
    assert sl.snapshot()["evictions"] == 1


# ---------------------------------------------------------------- source_ip

def test_source_ip_stick_and_find(clock, backends):
    sl = layer(clock, mode="source_ip", ttl="5m")
    assert sl.find(request("127.0.0.5"), backends) == (None, "no stick table entry for 127.0.0.5")
    assert sl.stick(request("127.0.0.5"), backends["b3"]) is None
    assert sl.find(request("127.0.0.5"), backends) == (backends["b3"],
                                                       "stick table: 127.0.0.5 -> b3")
    assert sl.find(request("127.0.0.6"), backends)[0] is None


def test_source_ip_table_expiry(clock, backends):
    sl = layer(clock, mode="source_ip", ttl="5m")
    sl.stick(request("127.0.0.5"), backends["b3"])
    clock.advance(299)
    assert sl.find(request("127.0.0.5"), backends)[0] is backends["b3"]  # refreshes
    clock.advance(299)
    assert sl.find(request("127.0.0.5"), backends)[0] is backends["b3"]
    clock.advance(300)
    assert sl.find(request("127.0.0.5"), backends) == (None, "table entry expired")
    assert sl.find(request("127.0.0.5"), backends) == (None, "no stick table entry for 127.0.0.5")


def test_source_ip_table_evicts_the_oldest(clock, backends):
    sl = layer(clock, mode="source_ip", table_size=3)
    for i, name in enumerate(["b1", "b2", "b3"], start=1):
        sl.stick(request(f"127.0.0.{i}"), backends[name])
        clock.advance(1)
    sl.find(request("127.0.0.1"), backends)  # a hit makes .1 the most recent
    sl.stick(request("127.0.0.4"), backends["b4"])
    assert len(sl.table) == 3
    assert sl.find(request("127.0.0.2"), backends)[0] is None  # least recently used: gone
    assert sl.find(request("127.0.0.1"), backends)[0] is backends["b1"]
    assert sl.find(request("127.0.0.4"), backends)[0] is backends["b4"]
    assert sl.table.evictions == 1


def test_source_ip_restick_replaces_the_target(clock, backends):
    sl = layer(clock, mode="source_ip")
    sl.stick(request("127.0.0.5"), backends["b1"])
    sl.stick(request("127.0.0.5"), backends["b2"])  # b1 went down, re-picked
    assert sl.find(request("127.0.0.5"), backends)[0] is backends["b2"]
    assert len(sl.table) == 1


def test_expired_entries_are_purged_when_new_ones_arrive(clock, backends):
    sl = layer(clock, mode="source_ip", ttl="10s")
    for i in range(1, 6):
        sl.stick(request(f"127.0.0.{i}"), backends["b1"])
    clock.advance(11)
    sl.stick(request("127.0.0.9"), backends["b2"])
    assert len(sl.table) == 1


def test_every_layer_has_the_same_api(clock, backends):
    for mode in ("cookie", "app_cookie", "source_ip"):
        sl = layer(clock, mode=mode)
        assert sl.mode == mode
        assert sl.observe_response(backends["b1"], ["X=1"]) is None
        assert sl.snapshot()["mode"] == mode


# ---------------------------------------------------------------- through PoolRuntime.choose

def test_pool_runtime_sticks_and_repicks_with_cookie(clock):
    from proxy.config import load_config
    from proxy.model import Intent
    from proxy.runtime import Runtime

    config = load_config("""
listeners:
  web: {bind: 127.0.0.1:8080, routes: [all]}
routes:
  all: {forward: web}
pools:
  web:
    sticky: {mode: cookie, secret: s3cret}
    backends:
      - {name: b1, address: 127.0.0.1:9001}
      - {name: b2, address: 127.0.0.1:9002}
      - {name: b3, address: 127.0.0.1:9003}
""")
    pool = Runtime(config, clock=clock, rng=random.Random(1)).pools["web"]
    first = pool.choose(PickContext(client_ip="127.0.0.5", now=clock()))
    assert first.sticky == {"mode": "cookie", "hit": False, "target": None,
                            "reason": "no sticky cookie"}
    cookies = cookie_from(first.set_cookie)
    for _ in range(5):
        again = pool.choose(PickContext(client_ip="127.0.0.5", now=clock(), cookies=cookies))
        assert again.backend is first.backend and again.sticky["hit"] is True
        assert again.set_cookie is None
    # the target is drained: re-picked elsewhere and a new cookie is set
    first.backend.intent = Intent.DRAINING
    moved = pool.choose(PickContext(client_ip="127.0.0.5", now=clock(), cookies=cookies))
    assert moved.backend is not first.backend and moved.sticky["hit"] is False
    assert cookie_from(moved.set_cookie)["LBSTICKY"].startswith(moved.backend.name + ".")
