"""What an L4 listener cannot do, refused by config with the reason; PROXY headers (pure)."""
from __future__ import annotations

import ipaddress
import struct
import subprocess
import sys

import pytest

from proxy.config import ConfigError, load_config
from proxy.io.l4 import V2_SIGNATURE, proxy_header_v1, proxy_header_v2
from tests.proxy.e2e.support import REPO

WHY = "relays bytes without parsing HTTP, so it never sees a host, path, header or cookie"


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(text)
    return err.value.lines()


def tcp(pool_yaml: str, listener_extra: str = "") -> str:
    return f"""
listeners:
  raw: {{bind: "127.0.0.1:0", protocol: tcp, pool: p{listener_extra}}}
pools:
  p: {pool_yaml}
"""


def test_path_routes_are_refused_on_a_tcp_listener():
    lines = errors_of("""
listeners:
  raw: {bind: "127.0.0.1:0", protocol: tcp, pool: p, routes: [api]}
routes:
  api: {match: {path_prefix: /api}, forward: p}
pools: {p: {}}
""")
    assert any(line.startswith("listeners.raw.routes: a tcp listener cannot route on HTTP")
               and WHY in line for line in lines), lines


@pytest.mark.parametrize("pool, setting, needle, fix", [
    ("{sticky: {mode: cookie}}", "sticky.mode", "sticky mode cookie needs HTTP cookies",
     "source_ip"),
    ("{sticky: {mode: app_cookie, cookie: SESSIONID}}", "sticky.mode",
     "sticky mode app_cookie needs HTTP", "source_ip"),
    ("{balancer: {algorithm: consistent_hash, hash_key: {source: uri}}}",
     "balancer.hash_key.source",
     "balancer consistent_hash hashes on uri, which only exists in HTTP", "client_ip"),
    ("{balancer: {algorithm: maglev, hash_key: {source: header, name: X-User}}}",
     "balancer.hash_key.source", "balancer maglev hashes on header", "client_ip"),
    ("{balancer: {algorithm: ip_hash, hash_key: {source: cookie, name: uid}}}",
     "balancer.hash_key.source", "balancer ip_hash hashes on cookie", "client_ip"),
])
def test_http_only_pool_features_are_refused_behind_a_tcp_listener(pool, setting, needle, fix):
    lines = errors_of(tcp(pool))
    line = next((l for l in lines if needle in l), None)
    assert line is not None, lines
    # The error points at the pool setting to change and names the listener.
    assert line.startswith(f"pools.p.{setting}: ") and "tcp listener raw" in line
    assert WHY in line and fix in line


@pytest.mark.parametrize("pool", [
    "{balancer: {algorithm: ip_hash}}",  # client_ip works at L4
    "{balancer: {algorithm: maglev}}",
    "{balancer: {algorithm: least_connections}}",
    "{balancer: {algorithm: power_of_two_choices}}",
    "{balancer: {algorithm: least_response_time}}",
    "{sticky: {mode: source_ip}}",
    "{proxy_protocol: v2}",
    "{backends: [{name: a, address: '127.0.0.1:9', proxy_protocol: v1}]}",
])
def test_what_needs_no_http_is_fine_at_l4(pool):
    load_config(tcp(pool))


def test_proxy_protocol_is_refused_behind_an_http_listener():
    lines = errors_of("""
listeners:
  web: {bind: "127.0.0.1:0", routes: [all]}
routes: {all: {forward: p}}
pools:
  p: {backends: [{name: a, address: "127.0.0.1:9", proxy_protocol: v2}]}
""")
    assert any(l.startswith("pools.p.proxy_protocol:") and "X-Forwarded-For" in l
               for l in lines), lines


def test_backend_tls_is_refused_behind_a_tcp_listener():
    lines = errors_of(tcp("{tls: {verify: true}}"))
    assert any(l.startswith("pools.p.tls:") and "passthrough" in l for l in lines), lines


def test_tcp_listener_without_a_pool_says_what_to_give():
    lines = errors_of("""
listeners:
  raw: {bind: "127.0.0.1:0", protocol: tcp}
pools: {}
""")
    assert "listeners.raw.pool: a tcp listener needs pool: NAME" in lines


def test_bad_proxy_protocol_value_has_its_path():
    lines = errors_of(tcp("{proxy_protocol: v3}"))
    assert any(l.startswith("pools.p.proxy_protocol:") for l in lines), lines


def test_check_cli_prints_the_l4_refusal(tmp_path):
    path = tmp_path / "l4.yaml"
    path.write_text(tcp("{sticky: {mode: cookie}}"))
    result = subprocess.run([sys.executable, "-m", "proxy", "--check", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "pools.p.sticky.mode: sticky mode cookie needs HTTP cookies" in result.stdout
    assert WHY in result.stdout


# ---------------------------------------------------------------- PROXY protocol headers

def test_proxy_header_v1():
    assert proxy_header_v1(("127.0.0.7", 40000), ("127.0.0.1", 8443)) == \
        b"PROXY TCP4 127.0.0.7 127.0.0.1 40000 8443\r\n"
    assert proxy_header_v1(("::1", 5), ("::1", 6)) == b"PROXY TCP6 ::1 ::1 5 6\r\n"


def parse_v2(data: bytes):
    assert data[:12] == V2_SIGNATURE
    ver_cmd, fam, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    body = data[16:16 + length]
    assert len(data) == 16 + length
    n = 4 if fam == 0x11 else 16
    src = ipaddress.ip_address(body[:n])
    dst = ipaddress.ip_address(body[n:2 * n])
    sport, dport = struct.unpack("!HH", body[2 * n:2 * n + 4])
    tlvs = {}
    rest = body[2 * n + 4:]
    while rest:
        kind, size = rest[0], struct.unpack("!H", rest[1:3])[0]
        tlvs[kind] = rest[3:3 + size]
        rest = rest[3 + size:]
    return ver_cmd, fam, (str(src), sport), (str(dst), dport), tlvs


def test_proxy_header_v2_ipv4_with_authority():
    header = proxy_header_v2(("127.0.0.7", 40000), ("127.0.0.1", 8443), "www.lab.test")
    ver_cmd, fam, src, dst, tlvs = parse_v2(header)
    assert ver_cmd == 0x21 and fam == 0x11  # v2 PROXY, TCP over IPv4
    assert src == ("127.0.0.7", 40000) and dst == ("127.0.0.1", 8443)
    assert tlvs == {0x02: b"www.lab.test"}


def test_proxy_header_v2_ipv6():
    ver_cmd, fam, src, dst, tlvs = parse_v2(proxy_header_v2(("::1", 1), ("::2", 2)))
    assert fam == 0x21 and src == ("::1", 1) and dst == ("::2", 2) and tlvs == {}


def test_headers_are_what_the_toy_backend_parses():
    from labs.backend import proxy_protocol as toy

    v2 = toy.parse(proxy_header_v2(("127.0.0.7", 40000), ("127.0.0.1", 8443), "www.lab.test")
                   + b"rest").describe()
    assert v2["version"] == 2 and v2["source"] == "127.0.0.7:40000"
    assert v2["destination"] == "127.0.0.1:8443" and v2["tlvs"]["authority"] == "www.lab.test"
    v1 = toy.parse(proxy_header_v1(("127.0.0.7", 40000), ("127.0.0.1", 8443))).describe()
    assert v1["version"] == 1 and v1["source"] == "127.0.0.7:40000"
