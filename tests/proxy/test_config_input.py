"""The config loader under hostile input: generated variants of every family.

Whatever the bytes, `load_config` either returns a Config or raises ConfigError
with a bounded message naming what is wrong; it never raises anything else and
never builds what it was asked to refuse. Run with
`--hypothesis-show-statistics` to see how many variants each family tried.
"""
from __future__ import annotations

import json
import pathlib

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from proxy.config import (
    MAX_ERRORS,
    MAX_MESSAGE,
    MAX_TABLE_SIZE,
    ConfigError,
    load_config,
    load_config_file,
    parse_config,
    to_data,
)
from proxy.configtext import MAX_BYTES, MAX_DEPTH, MAX_INT_DIGITS, MAX_NODES
from proxy.durations import MAX_SECONDS, format_duration, parse_duration

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "proxy" / "examples"
BASE_TEXT = (EXAMPLES / "round_robin.yaml").read_text()
# Generous: a message quotes at most an excerpt; this is what "bounded" means here.
MESSAGE_BOUND = MAX_MESSAGE + 50
MANY = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SOME = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def base() -> dict:
    return yaml.safe_load(BASE_TEXT)


def refused(source, **kw) -> ConfigError:
    """load_config(source) must raise ConfigError, with bounded output."""
    with pytest.raises(ConfigError) as info:
        if isinstance(source, dict):
            parse_config(source)
        else:
            load_config(source, **kw)
    exc = info.value
    assert exc.errors, "a refusal names at least one problem"
    assert len(exc.errors) <= MAX_ERRORS + 1
    for path, message in exc.errors:
        assert message and len(message) <= MESSAGE_BOUND, message[:200]
        assert len(path) <= 210
        assert "Traceback" not in message
    return exc


def messages(exc: ConfigError) -> str:
    return "\n".join(exc.lines())


# ---------------------------------------------------------------- anything at all

@MANY
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_a_config_or_a_config_error(raw):
    try:
        load_config(raw)
    except ConfigError as exc:
        assert all(len(m) <= MESSAGE_BOUND for _, m in exc.errors)


@MANY
@given(st.text(alphabet=st.sampled_from(list("[]{}:,-&*!|>'\"#?%@` \n\t") + ["a", "1"]),
               max_size=400))
def test_yaml_punctuation_soup_gives_a_config_or_a_config_error(text):
    try:
        load_config(text)
    except ConfigError as exc:
        assert all(len(m) <= MESSAGE_BOUND for _, m in exc.errors)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=40)


@MANY
@given(st.dictionaries(st.sampled_from(["admin", "listeners", "routes", "pools",
                                        "access_log", "extra"]), json_values, max_size=5))
def test_arbitrary_data_gives_a_config_or_a_config_error(data):
    try:
        parse_config(data)
    except ConfigError as exc:
        assert all(len(m) <= MESSAGE_BOUND for _, m in exc.errors)


@MANY
@given(st.lists(st.tuples(st.sampled_from(["listeners", "routes", "pools"]),
                          st.sampled_from(["web", "all", "x"]), json_values), max_size=6))
def test_arbitrary_sections_give_a_config_or_a_config_error(items):
    data = base()
    for section, name, value in items:
        data.setdefault(section, {})[name] = value
    try:
        parse_config(data)
    except ConfigError as exc:
        assert all(len(m) <= MESSAGE_BOUND for _, m in exc.errors)


# ---------------------------------------------------------------- encodings

@MANY
@given(encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                 "utf-32-le", "utf-32-be"]),
       prefix=st.text(max_size=20))
def test_utf16_and_utf32_are_refused_naming_the_encoding(encoding, prefix):
    raw = ("# " + prefix.replace("\n", " ") + "\n" + BASE_TEXT).encode(encoding, "surrogatepass")
    exc = refused(raw)
    assert "UTF-8" in messages(exc)


@MANY
@given(st.integers(min_value=0, max_value=len(BASE_TEXT) - 1),
       st.sampled_from([b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xe9", b"\xed\xa0\x80"]))
def test_bytes_that_are_not_utf8_are_refused_with_their_place(at, bad):
    raw = BASE_TEXT.encode()
    exc = refused(raw[:at] + bad + raw[at:])
    assert "not UTF-8" in messages(exc) and "line" in messages(exc)


def test_a_utf8_byte_order_mark_is_accepted():
    load_config(b"\xef\xbb\xbf" + BASE_TEXT.encode())


def test_file_not_utf8_via_load_config_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(BASE_TEXT.encode("utf-16"))
    with pytest.raises(ConfigError) as info:
        load_config_file(str(path))
    assert "UTF-16" in info.value.lines()[0]


# ---------------------------------------------------------------- nesting

@MANY
@given(depth=st.integers(min_value=MAX_DEPTH + 1, max_value=20_000),
       opener=st.sampled_from(["[", "{a: ", "- ", "{\"a\": "]),
       where=st.sampled_from(["top", "value"]))
def test_deep_nesting_is_refused(depth, opener, where):
    closer = {"[": "]", "{a: ": "}", "- ": "", "{\"a\": ": "}"}[opener]
    if opener == "- ":
        depth = min(depth, 400)  # block indentation grows quadratically: keep it under the size limit
        body = "".join("  " * i + "- \n" for i in range(depth)) + "  " * depth + "x\n"
    else:
        body = opener * depth + "1" + closer * depth
    text = body if where == "top" else BASE_TEXT.replace("pools:", f"deep: {body}\npools:", 1) \
        if opener != "- " else BASE_TEXT + "\ndeep:\n" + body
    exc = refused(text)
    assert "nested more than" in messages(exc) or "not valid YAML" in messages(exc)


@SOME
@given(depth=st.integers(min_value=MAX_DEPTH + 1, max_value=MAX_BYTES // 7),
       kind=st.sampled_from(["[", "{\"a\":"]))
def test_deep_json_is_refused(depth, kind):
    close = "]" if kind == "[" else "}"
    exc = refused(kind * depth + "1" + close * depth, as_json=True)
    assert "nested more than" in messages(exc)


# ---------------------------------------------------------------- numbers

INT_PLACES = [("pools", "web", "backends", 0, "weight"),
              ("pools", "web", "retries"),
              ("admin", "request_history"),
              ("pools", "web", "balancer", "table_size"),
              ("listeners", "web", "limits", "max_body_bytes")]


def put(data: dict, path: tuple, value) -> dict:
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[path[-1]] = value
    return data


@MANY
@given(digits=st.integers(min_value=MAX_INT_DIGITS + 1, max_value=30_000),
       place=st.sampled_from(INT_PLACES), as_json=st.booleans(), sign=st.sampled_from(["", "-"]))
def test_integers_with_thousands_of_digits_are_refused(digits, place, as_json, sign):
    marker = 123456789
    data = put(base(), place, marker)
    text = json.dumps(data) if as_json else yaml.safe_dump(data)
    text = text.replace(str(marker), sign + "9" * digits, 1)
    exc = refused(text, as_json=as_json)
    assert "digits" in messages(exc)


@MANY
@given(place=st.sampled_from(INT_PLACES),
       value=st.integers(min_value=10**7, max_value=10**29) | st.integers(max_value=-10**7))
def test_integers_beyond_each_bound_are_refused(place, value):
    if place[-1] == "max_body_bytes":
        value = value * 10**6 if value > 0 else value
    refused(put(base(), place, value))


@SOME
@given(st.sampled_from([10**15 + 37, 10**18 + 9, 2**61 - 1, 10**19 + 3, 131071, 1_000_003, MAX_TABLE_SIZE + 2]))
def test_a_huge_maglev_table_size_is_refused_without_checking_primality(size):
    data = put(base(), ("pools", "web", "balancer"), {"algorithm": "maglev", "table_size": size})
    assert "table_size" in messages(refused(data))


@SOME
@given(st.sampled_from([".inf", "-.inf", ".nan", ".NaN", "1.0e+999"]),
       st.sampled_from([("pools", "web", "panic_threshold"),
                        ("pools", "web", "balancer", "load_factor")]))
def test_infinite_and_nan_floats_are_refused(text, place):
    marker = 0.123456
    raw = yaml.safe_dump(put(base(), place, marker)).replace(str(marker), text, 1)
    refused(raw)


# ---------------------------------------------------------------- aliases and size

def bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [x" + ",x" * (width - 1) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\nlisteners: {}\n"


@MANY
@given(levels=st.integers(min_value=3, max_value=40), width=st.integers(min_value=2, max_value=12),
       placement=st.sampled_from(["top", "inside"]))
def test_alias_bombs_are_refused_without_expansion_or_error_flood(levels, width, placement):
    text = bomb(levels, width)
    if placement == "inside":
        last = f"a{levels - 1}"
        text = text.replace("listeners: {}", f"listeners: {{web: {{bind: *{last}}}}}")
    expanded = sum(width ** i for i in range(1, levels + 1))
    if expanded <= MAX_NODES:
        refused(text)  # small enough to read, still not a config
        return
    exc = refused(text)
    assert "alias" in messages(exc)
    assert len(messages(exc)) < 1000


def test_an_alias_inside_its_own_node_is_refused():
    exc = refused("listeners: &l {web: {bind: *l}}")
    assert "inside the node it names" in messages(exc)


@SOME
@given(extra=st.integers(min_value=1, max_value=3 * MAX_BYTES))
def test_documents_beyond_the_size_limit_are_refused(extra):
    raw = (BASE_TEXT + "\n#" + "x" * (MAX_BYTES + extra)).encode()
    assert "limit" in messages(refused(raw))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=MAX_NODES + 1, max_value=MAX_NODES * 2))
def test_many_small_values_are_bounded(count):
    text = BASE_TEXT + "\nbulk: [" + ",".join(["1"] * count) + "]\n"
    if len(text) > MAX_BYTES:
        refused(text.encode())
    else:
        refused(text)


# ---------------------------------------------------------------- strings on the wire

WIRE_PLACES = [
    (("routes", "all"), {"redirect": {"location": "https://x.test/{}"}}, "redirect.location"),
    (("routes", "all"), {"respond": {"body": "ok", "content_type": "text/plain{}"}},
     "respond.content_type"),
    (("routes", "all"), {"respond": {"body": "a{}b"}}, "respond.body"),
    (("pools", "web", "health"), {"type": "http", "path": "/health{}"}, "health.path"),
    (("pools", "web", "sticky"), {"mode": "cookie", "cookie": "SID{}"}, "sticky.cookie"),
    (("pools", "web", "sticky"), {"mode": "cookie", "path": "/a{}"}, "sticky.path"),
    (("admin",), {"listen": "127.0.0.1:9900", "token": "tok{}en"}, "admin.token"),
    (("pools", "web", "balancer"), {"algorithm": "ip_hash",
                                    "hash_key": {"source": "header", "name": "X{}"}},
     "balancer.hash_key.name"),
    (("access_log",), "/tmp/a{}.log", "access_log"),
]


@MANY
@given(place=st.sampled_from(WIRE_PLACES),
       bad=st.sampled_from(["\r", "\n", "\x00", "\r\n", "\r\nSet-Cookie: x=1",
                            "\r\n\r\nGET /admin HTTP/1.1", "\x0b", "\x7f", "\x1b[31m"]))
def test_control_characters_in_wire_strings_are_refused(place, bad):
    path, value, field = place
    if field == "respond.body" and bad == "\n":
        return  # a body has lines; it is framed by Content-Length (see Respond)
    fill = (json.loads(json.dumps(value).replace("{}", json.dumps(bad)[1:-1]))
            if not isinstance(value, str) else value.replace("{}", bad))
    data = base()
    if path == ("routes", "all"):
        data["routes"]["all"] = {"match": {}, **fill}
    else:
        put(data, path, fill)
    exc = refused(data)
    assert any(field.split(".")[-1] in p or field.split(".")[-1] in m for p, m in exc.errors), \
        exc.lines()


def test_a_body_may_have_lines():
    data = base()
    data["routes"]["all"] = {"respond": {"body": "line one\nline two\n"}}
    parse_config(data)


@SOME
@given(st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x2FFF), min_size=1,
               max_size=5))
def test_non_ascii_locations_and_content_types_are_refused(text):
    for action in ({"redirect": {"location": "/" + text}},
                   {"respond": {"content_type": "text/" + text}}):
        data = base()
        data["routes"]["all"] = action
        refused(data)


@pytest.mark.parametrize("token", ["", " ", "   ", "\t", "a b"])
def test_blank_admin_token_is_refused(token):
    data = base()
    data["admin"]["token"] = token
    assert "admin.token" in messages(refused(data))


# ---------------------------------------------------------------- addresses

@MANY
@given(st.one_of(
    st.lists(st.integers(), min_size=2, max_size=2),
    st.lists(st.text(max_size=5), min_size=0, max_size=4),
    st.tuples(st.just("127.0.0.1"), st.integers(min_value=65536)),
    st.builds(lambda h, p, q: f"{h}:{p}:{q}", st.sampled_from(["127.0.0.1", "localhost"]),
              st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(lambda p: f"127.0.0.1:{p}", st.integers(min_value=65536)),
    st.builds(lambda p: f"127.0.0.1:{p}",
              st.sampled_from([" 80", "8_080", "-1", "+80", "0x50", "", "80.0", "٨٠"])),
    st.builds(lambda h: f"{h}:80", st.sampled_from(["", "a b", "bad_host!", "::1", "1.2.3.4.5",
                                                     "[::1", "ex\r\nample", "-a.test"])),
    st.integers(), st.booleans(), st.floats(allow_nan=False),
))
def test_malformed_addresses_are_refused(address):
    for place in (("listeners", "web", "bind"), ("pools", "web", "backends", 0, "address")):
        data = put(base(), place, address)
        exc = refused(data)
        assert any(place[-1] in p for p, _ in exc.errors), exc.lines()


@MANY
@given(host=st.one_of(st.ip_addresses().map(str),
                      st.from_regex(r"\A[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,10}){0,3}\Z")),
       port=st.integers(1, 65535))
def test_valid_addresses_round_trip(host, port):
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    data = put(base(), ("pools", "web", "backends", 0, "address"), text)
    config = parse_config(data)
    assert parse_config(to_data(config)) == config
    assert to_data(config)["pools"]["web"]["backends"][0]["address"] == text


# ---------------------------------------------------------------- durations

@MANY
@given(whole=st.integers(0, 10**12 - 1), fraction=st.text("0123456789", max_size=9),
       unit=st.sampled_from(["ms", "s", "m", "h"]))
def test_durations_round_trip_exactly(whole, fraction, unit):
    text = f"{whole}.{fraction}{unit}" if fraction else f"{whole}{unit}"
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        assert "30 days" in str(exc) or "bad duration" in str(exc)
        return
    assert seconds <= MAX_SECONDS
    assert parse_duration(format_duration(seconds)) == seconds


@MANY
@given(st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.integers(min_value=10**12), st.sampled_from(["ms", "s"])),
    st.builds(lambda n: f"{n}h", st.integers(min_value=721, max_value=10**11)),
    st.builds(lambda n: f"{n}m", st.integers(min_value=43_201, max_value=10**11)),
    st.sampled_from(["1e400s", "inf s", "infs", "nan s", "1e9h", "-1s", "1.5", "5",
                     "0x10s", "1_000s", "1.0000000001s"]),
))
def test_durations_too_large_or_unwritable_are_refused(text):
    for place in (("pools", "web", "slow_start"), ("pools", "web", "timeouts", "connect")):
        exc = refused(put(base(), place, text))
        assert place[-1] in messages(exc)


# ---------------------------------------------------------------- every error at once

INJECTIONS = {
    "pools.web.balancer.algorithm": lambda d: put(d, ("pools", "web", "balancer", "algorithm"),
                                                  "nope"),
    "pools.web.retries": lambda d: put(d, ("pools", "web", "retries"), 99),
    "pools.web.backends[0].address": lambda d: put(d, ("pools", "web", "backends", 0, "address"),
                                                   [1, 2]),
    "listeners.web.bind": lambda d: put(d, ("listeners", "web", "bind"), "127.0.0.1:1:2"),
    "listeners.web.routes[1]": lambda d: d["listeners"]["web"]["routes"].append("ghost"),
    "routes.other": lambda d: put(d, ("routes", "other"), {"forward": "missing"}),
    "admin.token": lambda d: put(d, ("admin", "token"), ""),
    "routes.r2.redirect.location": lambda d: put(d, ("routes", "r2"),
                                                 {"redirect": {"location": "/\r\nX: y"}}),
    "pools.extra.health.path": lambda d: put(d, ("pools", "extra"),
                                             {"health": {"path": "/h HTTP/1.1\r\n"}}),
    "listeners.tcp.pool": lambda d: put(d, ("listeners", "tcp"),
                                        {"bind": "127.0.0.1:0", "protocol": "tcp",
                                         "pool": "absent"}),
}


@MANY
@given(st.sets(st.sampled_from(sorted(INJECTIONS)), min_size=2))
def test_every_error_is_reported_in_one_answer(chosen):
    data = base()
    for name in sorted(chosen):
        INJECTIONS[name](data)
    exc = refused(data)
    paths = [p for p, _ in exc.errors]
    for name in chosen:
        assert any(p.startswith(name) for p in paths), (name, exc.lines())


def test_a_reference_to_an_invalid_pool_is_not_also_dangling():
    data = base()
    data["pools"]["web"]["retries"] = 99
    exc = refused(data)
    assert [p for p, _ in exc.errors] == ["pools.web.retries"]


# ---------------------------------------------------------------- alpn

def test_alpn_h2_is_refused_unless_the_listener_serves_http2():
    data = base()
    data["listeners"]["web"]["tls"] = {"certificates": [{"pki": "www.lab.test"}],
                                       "alpn": ["h2", "http/1.1"]}
    exc = refused(data)
    assert "h2" in messages(exc) and "http2: true" in messages(exc)
    data["listeners"]["web"]["http2"] = True
    parse_config(data)


# ---------------------------------------------------------------- what a config makes the proxy build

@MANY
@given(backends=st.integers(1, 1000), size=st.sampled_from([7, 251, 1009, 65537]))
def test_maglev_needs_a_slot_per_backend(backends, size):
    data = base()
    data["pools"]["web"]["balancer"] = {"algorithm": "maglev", "table_size": size}
    data["pools"]["web"]["backends"] = [{"name": f"b{i}", "address": f"127.0.0.1:{1000 + i}"}
                                        for i in range(backends)]
    if backends > size:
        assert "table_size" in messages(refused(data))
    else:
        parse_config(data)


@MANY
@given(backends=st.integers(1, 1000), vnodes=st.integers(1, 10_000),
       algorithm=st.sampled_from(["consistent_hash", "consistent_hash_bounded"]))
def test_ring_points_are_bounded(backends, vnodes, algorithm):
    from proxy.config import MAX_RING_POINTS

    data = base()
    data["pools"]["web"]["balancer"] = {"algorithm": algorithm, "virtual_nodes": vnodes}
    data["pools"]["web"]["backends"] = [{"name": f"b{i}", "address": f"127.0.0.1:{1000 + i}"}
                                        for i in range(backends)]
    if backends * vnodes > MAX_RING_POINTS:
        assert "virtual_nodes" in messages(refused(data))
    else:
        parse_config(data)


@SOME
@given(extra=st.integers(1, 200))
def test_beyond_the_count_bounds_is_refused(extra):
    from proxy.config import MAX_BACKENDS, MAX_LISTENERS

    data = base()
    data["pools"]["web"]["backends"] = [{"name": f"b{i}", "address": f"127.0.0.1:{1000 + i}"}
                                        for i in range(MAX_BACKENDS + extra)]
    assert "backends" in messages(refused(data))
    data = base()
    for i in range(MAX_LISTENERS + extra):
        data["listeners"][f"l{i}"] = {"bind": "127.0.0.1:0", "routes": ["all"]}
    assert "listeners" in messages(refused(data))


@MANY
@given(backends=st.integers(1, 400), interval_ms=st.integers(10, 5000), pools=st.integers(1, 3))
def test_the_total_probe_rate_is_bounded(backends, interval_ms, pools):
    from proxy.config import MAX_PROBES_PER_S

    data = base()
    template = data["pools"]["web"]
    data["pools"] = {}
    for p in range(pools):
        pool = dict(template, health={"type": "tcp", "interval": f"{interval_ms}ms"})
        pool["backends"] = [{"name": f"p{p}b{i}", "address": f"127.0.0.1:{1000 + i}"}
                            for i in range(backends)]
        data["pools"][f"p{p}"] = pool
    data["routes"]["all"]["forward"] = "p0"
    rate = pools * backends / (interval_ms / 1000)
    if rate > MAX_PROBES_PER_S:
        assert "probes per second" in messages(refused(data))
    else:
        parse_config(data)


@pytest.mark.parametrize("place", [("listeners", "web", "bind"),
                                   ("pools", "web", "backends", 0, "address")])
def test_a_too_long_integer_is_refused_at_its_setting(place):
    """Hypothesis once drew a 37-digit address: the size bound named the setting only
    inside its message, with an empty path, so a form could not point at the field."""
    exc = refused(put(base(), place, 1329227995784915872903807060280344576))
    assert [p for p, _ in exc.errors] == [".".join(map(str, place)).replace(".0.", "[0].")]
    assert "more than 30 digits" in exc.lines()[0]
