import pytest

from proxy.balancers.hashing import stable_hash
from proxy.config import BalancerConfig, ConfigError, load_config
from tests.proxy.balancers.support import backends, balancer, client_ips, ctx, four

HASH_ALGORITHMS = ["ip_hash", "consistent_hash", "maglev", "consistent_hash_bounded"]


def mapping(bal, pool, keys):
    return {ip: bal.pick(ctx(ip=ip), pool).backend.name for ip in keys}


def test_stable_hash_is_stable_across_processes():
    # A pinned value: Python's salted hash() would differ from run to run.
    assert stable_hash("127.0.0.5") == 16301594348662561310


def test_ip_hash_is_stable_per_client():
    pool = four()
    bal = balancer("ip_hash", pool)
    first = mapping(bal, pool, client_ips(200))
    assert mapping(balancer("ip_hash", pool), pool, client_ips(200)) == first
    assert len(set(first.values())) == 4


def test_ip_hash_inputs():
    pool = four()
    decision = balancer("ip_hash", pool).pick(ctx(ip="127.0.0.5"), pool)
    h = stable_hash("127.0.0.5")
    assert decision.inputs == {"hash_key": "client_ip=127.0.0.5", "hash": h,
                               "modulo": 4, "index": h % 4}
    assert decision.backend.name == f"b{h % 4 + 1}"


def test_ip_hash_order_does_not_depend_on_the_eligible_order():
    pool = four()
    bal = balancer("ip_hash", pool)
    keys = client_ips(100)
    assert mapping(bal, pool, keys) == mapping(bal, list(reversed(pool)), keys)


def test_adding_a_fifth_backend_remaps_most_keys_with_ip_hash():
    keys = client_ips(10_000)
    pool4, pool5 = four(), backends("b1", "b2", "b3", "b4", "b5")
    before = mapping(balancer("ip_hash", pool4), pool4, keys)
    after = mapping(balancer("ip_hash", pool5), pool5, keys)
    moved = sum(before[k] != after[k] for k in keys)
    assert moved / len(keys) > 0.60  # ~80%: hash % 4 and hash % 5 rarely agree


def test_adding_a_fifth_backend_remaps_about_a_fifth_with_consistent_hash():
    keys = client_ips(10_000)
    pool4, pool5 = four(), backends("b1", "b2", "b3", "b4", "b5")
    before = mapping(balancer("consistent_hash", pool4), pool4, keys)
    after = mapping(balancer("consistent_hash", pool5), pool5, keys)
    moved = [k for k in keys if before[k] != after[k]]
    assert len(moved) / len(keys) <= 0.25
    assert all(after[k] == "b5" for k in moved)  # keys only move to the newcomer


def test_consistent_hash_spreads_and_skips_ineligible_backends():
    keys = client_ips(10_000)
    pool = four()
    bal = balancer("consistent_hash", pool)
    before = mapping(bal, pool, keys)
    shares = {n: list(before.values()).count(n) / len(keys) for n in ("b1", "b2", "b3", "b4")}
    assert all(0.18 < s < 0.32 for s in shares.values()), shares
    # b3 fails its health check: only its keys move; they come back when it returns
    without_b3 = [b for b in pool if b.name != "b3"]
    during = mapping(bal, without_b3, keys)
    assert all(during[k] == before[k] for k in keys if before[k] != "b3")
    assert "b3" not in during.values()
    assert mapping(bal, pool, keys) == before


def test_consistent_hash_is_weight_proportional():
    pool = backends("b1", "b2", weights=[3, 1])
    bal = balancer("consistent_hash", pool)
    assert bal.ring.points_per_backend == {"b1": 160, "b2": 53}
    counts = list(mapping(bal, pool, client_ips(10_000)).values()).count("b1")
    assert 0.68 < counts / 10_000 < 0.82


def test_consistent_hash_inputs():
    pool = four()
    bal = balancer("consistent_hash", pool, hash_key={"source": "header", "name": "X-User"})
    decision = bal.pick(ctx(headers={"x-user": "alice"}), pool)
    assert decision.inputs["hash_key"] == "header X-User=alice"
    assert decision.inputs["hash"] == stable_hash("alice")
    # the first ring point clockwise of the key's hash
    assert decision.inputs["ring_position"] == bal.ring.points[bal.ring.start(stable_hash("alice"))]
    assert "fallback" not in decision.inputs


@pytest.mark.parametrize("source,name,request_kw,label", [
    ("header", "X-User", {"headers": {"x-user": "alice"}}, "header X-User=alice"),
    ("cookie", "uid", {"cookies": {"uid": "42"}}, "cookie uid=42"),
    ("uri", None, {"path": "/video/7?q=1"}, "uri=/video/7?q=1"),
])
def test_hash_key_sources(source, name, request_kw, label):
    pool = four()
    bal = balancer("consistent_hash", pool, hash_key={"source": source, "name": name})
    decision = bal.pick(ctx(**request_kw), pool)
    assert decision.inputs["hash_key"] == label
    # same key from another client address: same backend
    assert bal.pick(ctx(ip="127.0.0.9", **request_kw), pool).backend is decision.backend


def test_missing_key_falls_back_to_client_ip_and_says_so():
    pool = four()
    by_header = balancer("consistent_hash", pool, hash_key={"source": "header", "name": "X-User"})
    by_ip = balancer("consistent_hash", pool)
    decision = by_header.pick(ctx(ip="127.0.0.5"), pool)
    assert decision.inputs["hash_key"] == "client_ip=127.0.0.5"
    assert decision.inputs["fallback"] == "header X-User missing: hashed client_ip instead"
    assert decision.backend is by_ip.pick(ctx(ip="127.0.0.5"), pool).backend


@pytest.mark.parametrize("algorithm", HASH_ALGORITHMS)
@pytest.mark.parametrize("source,name,expected", [
    ("client_ip", None, False), ("header", "X-User", True),
    ("cookie", "uid", True), ("uri", None, True),
])
def test_needs_http_follows_the_hash_key(algorithm, source, name, expected):
    config = BalancerConfig(algorithm=algorithm, hash_key={"source": source, "name": name})
    assert config.needs_http() is expected


@pytest.mark.parametrize("algorithm", ["round_robin", "weighted_round_robin", "least_connections",
                                       "least_outstanding_requests", "power_of_two_choices",
                                       "least_response_time", "random", "weighted_random"])
def test_non_hash_algorithms_do_not_need_http(algorithm):
    assert BalancerConfig(algorithm=algorithm).needs_http() is False


def test_config_refuses_header_hash_behind_tcp_listener():
    text = """
listeners:
  tcp: {bind: 127.0.0.1:8080, protocol: tcp, pool: web}
pools:
  web:
    balancer: {algorithm: consistent_hash, hash_key: {source: header, name: X-User}}
    backends: [{name: b1, address: 127.0.0.1:9001}]
"""
    with pytest.raises(ConfigError) as err:
        load_config(text)
    assert "consistent_hash hashes on header" in str(err.value)
