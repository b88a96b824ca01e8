"""The facts the course states are computed here and checked against its text.

Each arithmetic claim a learner reads (retry amplification, the DSR byte share, the smooth
weighted round-robin sequences, the busiest bin of "balls into bins", the ip_hash rehash,
the health-check window) is worked out in the test from first principles or from the
proxy's own code, and the test asserts that the text states the computed value. A wrong
number coming back (27 attempts, "one two-thousandth", a b a c...) fails here.

The texts scanned are every place a learner reads prose: lessons (front matter and body),
drills, predict exercises, the labs' texts (lab.yaml, solution.md and the YAML comments of
their configs) and docs/*.md.
"""
from __future__ import annotations

import math
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from explainer.course import content
from tests.proxy.balancers.support import backends, balancer, client_ips, ctx, picks

REPO = Path(__file__).resolve().parents[3]
CONTENT = REPO / "explainer" / "course" / "content"
CATALOG = REPO / "labs" / "catalog"


# ---------------------------------------------------------------- the texts

def _flatten(value) -> str:
    """Every string inside a YAML value, joined (keys are structure, not prose)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(_flatten(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(_flatten(v) for v in value)
    return ""


def _sections(text: str) -> list[str]:
    """A Markdown text cut at its level-2 headings: one unit per section."""
    return [part for part in re.split(r"\n(?=## )", text) if part.strip()]


def _comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)


def units() -> list[tuple[str, str]]:
    """(where, text) for each unit of prose a learner reads, whitespace collapsed."""
    out: list[tuple[str, str]] = []
    for path in sorted((CONTENT / "lessons").glob("*.md")):
        meta, body = content.split_front_matter(path.read_text(encoding="utf-8"))
        name = f"lessons/{path.name}"
        out.append((f"{name}: summary", meta.get("summary", "")))
        out.append((f"{name}: preset_note", meta.get("preset_note", "")))
        for check in meta.get("checks", []):
            out.append((f"{name}: checks.{check['id']}", _flatten(check)))
        out += [(f"{name}: body", section) for section in _sections(body)]
    for path in sorted((CONTENT / "drills").glob("*.yaml")):
        for drill in yaml.safe_load(path.read_text(encoding="utf-8"))["drills"]:
            out.append((f"drills/{path.name}: {drill['slug']}", _flatten(drill)))
    for path in sorted((CONTENT / "predict").glob("*.yaml")):
        out.append((f"predict/{path.name}", _flatten(yaml.safe_load(path.read_text("utf-8")))))
    for path in sorted(CONTENT.glob("presets/*.yaml")):
        out.append((f"presets/{path.name}", _comments(path.read_text(encoding="utf-8"))))
    for lab in sorted(p for p in CATALOG.iterdir() if (p / "lab.yaml").exists()):
        where = f"labs/catalog/{lab.name}"
        out.append((f"{where}/lab.yaml", _flatten(yaml.safe_load((lab / "lab.yaml").read_text()))))
        out.append((f"{where}/solution.md", (lab / "solution.md").read_text(encoding="utf-8")))
        for name in ("topology.yaml", "solution.yaml"):
            if (lab / name).exists():
                out.append((f"{where}/{name}", _comments((lab / name).read_text("utf-8"))))
    for path in sorted((REPO / "docs").glob("*.md")):
        out += [(f"docs/{path.name}", section)
                for section in _sections(path.read_text(encoding="utf-8"))]
    # Markdown emphasis and quote markers are not words: drop them, then collapse spaces.
    return [(where, " ".join(re.sub(r"(?m)^\s*> ?", "", text).replace("**", "").split()))
            for where, text in out]


@pytest.fixture(scope="module")
def texts() -> list[tuple[str, str]]:
    return units()


def text_of(texts, where_prefix: str) -> str:
    found = [t for w, t in texts if w.startswith(where_prefix)]
    assert found, f"no text at {where_prefix}"
    return " ".join(found)


def test_the_scan_sees_every_kind_of_text(texts):
    kinds = {where.split("/")[0] for where, _ in texts}
    assert {"lessons", "drills", "predict", "presets", "labs", "docs"} <= kinds
    assert len([w for w, _ in texts if w.startswith("lessons/")]) > 100


# ---------------------------------------------------------------- retries multiply

def attempts(retries_per_layer: int, layers: int) -> int:
    """A layer that retries r times makes r + 1 attempts, and each attempt below repeats it."""
    return (retries_per_layer + 1) ** layers


def test_three_layers_of_three_retries_make_64_attempts(texts):
    assert attempts(3, 3) == 64
    assert attempts(2, 3) == 27  # "three attempts each" (two retries) is the 27
    lesson = text_of(texts, "lessons/11-reading-5xx.md: body")
    assert f"4 × 4 × 4 = {attempts(3, 3)} attempts" in lesson
    assert "27 if each layer makes three attempts in all" in lesson
    drill = text_of(texts, "drills/tls-errors.yaml: retries-harm")
    assert f"4³ = {attempts(3, 3)} attempts" in drill


def test_no_text_says_three_retries_make_27(texts):
    for where, text in texts:
        for sentence in re.split(r"(?<=[.:;])\s", text):
            if re.search(r"\b(27|twenty-seven)\b", sentence) and re.search(r"retr", sentence):
                # 27 is right only for three attempts in all per layer
                assert re.search(r"(three|3) attempts", sentence), (where, sentence)


# ---------------------------------------------------------------- direct server return

REQUEST_B = 400
RESPONSE_B = 2_000_000  # "2 MB", decimal, as the lesson writes it
MSS = 1448  # a 1500-byte Ethernet MTU less IP, TCP and TCP timestamp headers
ACK_B = 52  # an ACK: 20 B IP + 20 B TCP + 12 B timestamps
SEGMENTS_PER_ACK = 2  # delayed ACKs acknowledge every second full segment


def dsr_inbound_bytes() -> tuple[int, int]:
    """(request bytes, ACK bytes) the balancer still carries when replies bypass it."""
    segments = math.ceil(RESPONSE_B / MSS)
    acks = math.ceil(segments / SEGMENTS_PER_ACK)
    return REQUEST_B, acks * ACK_B


def test_dsr_request_share_is_one_five_thousandth(texts):
    ratio = RESPONSE_B // REQUEST_B
    assert ratio == 5000 and RESPONSE_B % REQUEST_B == 0
    assert f"{100 * REQUEST_B / RESPONSE_B:.2f} %" == "0.02 %"
    lesson = text_of(texts, "lessons/02-l4-vs-l7.md: body")
    assert "one five-thousandth (0.02 %)" in lesson
    drill = text_of(texts, "drills/fundamentals.yaml: dsr-tradeoffs")
    assert f"1/{ratio} of a 2 MB response" in drill
    for where, text in texts:
        assert not re.search(r"two.thousandth|1/2000|1 ?: ?2000", text), where


def test_dsr_inbound_path_carries_the_acks_roughly_two_percent(texts):
    request, ack_bytes = dsr_inbound_bytes()
    share = (request + ack_bytes) / RESPONSE_B
    assert 0.015 < share < 0.025 and round(100 * share) == 2
    kb = round(ack_bytes / 1000)
    lesson = text_of(texts, "lessons/02-l4-vs-l7.md: body")
    assert f"about {kb} kB" in lesson and "roughly 2 %" in lesson
    relayed = (RESPONSE_B + request + ack_bytes) / (request + ack_bytes)
    assert 50 <= relayed < 60 and "about fifty times less" in lesson
    drill = text_of(texts, "drills/fundamentals.yaml: dsr-tradeoffs")
    assert f"about {kb} kB" in drill and "roughly 2 %" in drill
    # the request alone is 0.02 %; no text may give that as the share of the inbound path
    for where, text in texts:
        for sentence in re.split(r"(?<=[.;])\s", text):
            if "0.02 %" in sentence and re.search(r"DSR|direct server|carries", sentence):
                assert "five-thousandth" in sentence, (where, sentence)


# ---------------------------------------------------------------- NLB is not DSR

NLB = r"(NLB|Network Load Balancer)"
DSR = r"(DSR|direct server return)"
SAYS_NOT_DSR = re.compile(
    rf"{NLB}[^.]{{0,60}}\b(is not|isn't|is NOT|does not)\b[^.]{{0,20}}{DSR}"
    rf"|{NLB} does not \(replies"
    rf"|{DSR} \(which (AWS's )?{NLB} (does not do|is not)\)"
    rf"|is not {DSR}: replies go back through (it|the NLB)"
    rf"|(replies|responses) (go back|return|come back) through (it|the NLB)", re.I)
NLB_IS_DSR = re.compile(
    rf"{NLB}\s*(=|is|means|does)\s*(a\s+|an\s+)?{DSR}"
    rf"|{DSR}[^.()]{{0,30}}\((e\.g\.|for example|like|such as)[^)]*{NLB}"
    rf"|{NLB}[^.]{{0,40}}\b(uses|does|is a|works by)\s+{DSR}", re.I)


def test_no_text_says_the_nlb_is_direct_server_return(texts):
    mentioned_both = 0
    for where, text in texts:
        assert not NLB_IS_DSR.search(text), (where, NLB_IS_DSR.search(text).group(0))
        if re.search(NLB, text) and re.search(DSR, text, re.I):
            mentioned_both += 1
            assert SAYS_NOT_DSR.search(text), (
                f"{where} mentions the NLB and DSR together without saying the NLB is not DSR")
    assert mentioned_both >= 3  # the lesson and two drills put them side by side


def test_the_patterns_catch_the_old_wording():
    old = ("L4 packet forwarding / DSR (e.g. NLB with instance targets) preserves the source "
           "address, so nothing is needed.")
    assert NLB_IS_DSR.search(old)
    assert NLB_IS_DSR.search("The NLB is DSR, so replies skip it.")
    assert SAYS_NOT_DSR.search("The NLB is not DSR: replies go back through it.")


def test_nlb_client_ip_preservation_is_stated_with_its_conditions(texts):
    lesson = text_of(texts, "lessons/02-l4-vs-l7.md: body")
    for where_text in (lesson, text_of(texts, "drills/fundamentals.yaml: nlb-alb-static-ip"),
                       text_of(texts, "drills/fundamentals.yaml: real-client-ip")):
        assert "instance targets" in where_text
        assert re.search(r"IP targets over TCP ?(or|/) ?TLS", where_text)
        assert "PROXY protocol v2" in where_text


# ---------------------------------------------------------------- smooth weighted round robin

def swrr(weights: list[int], n: int, names: str = "abcdefgh") -> list[str]:
    pool = backends(*names[:len(weights)], weights=weights)
    return picks(balancer("weighted_round_robin", pool), pool, n)


def test_smooth_wrr_2_1_1_is_a_b_c_a(texts):
    seq = swrr([2, 1, 1], 8)
    assert seq[:4] == ["a", "b", "c", "a"] and seq[4:] == seq[:4]  # and it repeats
    drill = text_of(texts, "drills/algorithms.yaml: weighted-pool")
    assert f"({' '.join(seq[:4])}, {' '.join(seq[4:])}…)" in drill
    for where, text in texts:
        # "a a b a c a a" (weights 5:1:1) contains it; a 2:1:1 sequence starting so does not
        assert not re.search(r"(?<!\ba )\ba b a c\b", text), where


def test_every_smooth_wrr_sequence_in_the_course_is_the_balancers(texts):
    lesson = text_of(texts, "lessons/03-rotation-algorithms.md")
    assert " ".join(swrr([5, 1, 1], 7)) in lesson  # the worked table: a a b a c a a
    assert " ".join(swrr([3, 1], 4)) in text_of(
        texts, "lessons/03-rotation-algorithms.md: checks.wrr-31")  # a a b a
    pool = backends("b1", "b2", "b3", "b4", weights=[4, 2, 1, 1])
    seq = picks(balancer("weighted_round_robin", pool), pool, 8)
    assert " ".join(seq) in text_of(texts, "predict/wrr-smooth.yaml")


# ---------------------------------------------------------------- balls into bins

def busiest_bin(bins: int, choices: int, rng: random.Random) -> int:
    """Throw `bins` balls into `bins` bins, each to the emptiest of `choices` random bins."""
    load = [0] * bins
    for _ in range(bins):
        if choices == 1:
            i = rng.randrange(bins)
        else:
            i = min((rng.randrange(bins) for _ in range(choices)), key=load.__getitem__)
        load[i] += 1
    return max(load)


def typical(choices: int, trials: int = 300) -> list[int]:
    """The busiest bin's values that cover at least 85 % of seeded trials, most common first."""
    rng = random.Random(20261206 + choices)
    seen = Counter(busiest_bin(1000, choices, rng) for _ in range(trials))
    out, covered = [], 0
    for value, count in seen.most_common():
        out.append(value)
        covered += count
        if covered >= 0.85 * trials:
            return out
    return out


def test_balls_into_bins_numbers_are_the_simulations(texts):
    one, two = typical(1), typical(2)
    assert sorted(one) == [5, 6], one
    assert two == [3], two
    lesson = text_of(texts, "lessons/04-load-aware-algorithms.md: body")
    assert f"typically gets {min(one)} or {max(one)} of them" in lesson
    assert f"With two random choices it typically gets {two[0]}" in lesson
    drill = text_of(texts, "drills/algorithms.yaml: power-of-two")
    assert f"typically gets {min(one)} or {max(one)} with random and {two[0]} with two" in drill


def test_power_of_two_choices_is_credited_to_azar_broder_karlin_upfal(texts):
    credited = 0
    for where, text in texts:
        assert not re.search(r"Mitzenmacher (showed|proved|found)", text), where
        if "Mitzenmacher" in text:
            credited += 1
            assert re.search(r"Azar,? (Andrei )?Broder,? (Anna )?Karlin,? and (Eli )?Upfal",
                             text) and "1994" in text, where
    assert credited >= 3


# ---------------------------------------------------------------- ip_hash on a failure

def test_modulo_ip_hash_keeps_a_quarter_of_clients_when_one_of_four_fails(texts):
    pool = backends("b1", "b2", "b3", "b4")
    ip_hash = balancer("ip_hash", pool)
    clients = client_ips(12_000)
    before = {ip: ip_hash.pick(ctx(ip=ip), pool).backend.name for ip in clients}
    after = {ip: ip_hash.pick(ctx(ip=ip), pool[:3]).backend.name for ip in clients}
    stayed = sum(before[ip] == after[ip] for ip in clients) / len(clients)
    assert abs(stayed - 0.25) < 0.02, stayed  # LBLab's ip_hash takes the modulo over the eligible
    lesson = text_of(texts, "lessons/05-hashing.md")
    assert "25 % stay, 75 % move" in lesson
    # and the lesson says not every ip_hash does this: nginx's moves only the dead server's keys
    assert "nginx's `ip_hash`" in lesson and "only the dead server's clients move" in lesson
    assert "`down`" in lesson and "balance source" in lesson


# ---------------------------------------------------------------- the health-check window

def window(interval: float, threshold: int, timeout: float, hangs: bool) -> float:
    """Worst case: interval × unhealthy_threshold, plus the last probe's timeout."""
    return interval * threshold + (timeout if hangs else 0.0)


def _seconds(cell: str) -> float:
    value, unit = cell.split()[:2]
    return float(value) / (1000 if unit == "ms" else 1)


def test_the_window_table_follows_the_one_formula():
    text = (CONTENT / "lessons" / "06-health-checks.md").read_text(encoding="utf-8")
    rows = [line.strip("|").split("|") for line in text.splitlines()
            if re.match(r"\| \d+ m?s \| \d+ \| \d+ m?s \|", line)]
    assert len(rows) == 4
    for interval, threshold, timeout, refusing, hanging in rows:
        i, t, n = _seconds(interval), _seconds(timeout), int(threshold)
        assert _seconds(refusing) == window(i, n, t, hangs=False), rows
        assert _seconds(hanging) == window(i, n, t, hangs=True), rows


def test_the_window_numbers_in_the_course_agree(texts):
    assert window(10, 3, 5, hangs=False) == 30 and window(10, 3, 5, hangs=True) == 35
    lesson = text_of(texts, "lessons/06-health-checks.md")
    assert "interval × unhealthy_threshold + the last probe's timeout" in lesson
    assert f"250 × {window(10, 3, 5, True):g} = 8,750 requests" in lesson
    drill = text_of(texts, "drills/health.yaml: health-window-math")
    assert f"fails at {window(10, 3, 5, True):g} s" in drill and "10 × 3 + 5" in drill
    assert f"= {window(2, 3, 1, True):g} s" in drill


def test_no_text_uses_another_window_formula(texts):
    for where, text in texts:
        assert not re.search(r"threshold\s*×\s*max\(", text), where
        assert not re.search(r"\(\+ ?timeout, when", text), where


# ---------------------------------------------------------------- status codes and TLS

def test_nginx_connect_failures_are_502_refused_504_timed_out(texts):
    for where, text in texts:
        if re.search(r"nginx[^.]{0,30}502", text):
            assert re.search(r"504[^.]{0,40}(times? out|timed out|timeout)"
                             r"|(times? out|timed out|timeout)[^.]{0,20}504", text), where


def test_no_text_says_most_sites_re_encrypt(texts):
    for where, text in texts:
        assert not re.search(r"\bmost (public )?sites\b", text, re.I), where


# ---------------------------------------------------------------- grace is not slow start

TARGET_GROUP_HAS_NO_GRACE = re.compile(
    r"target group[^.;]{0,40}\b(has no|no grace|none)\b"
    r"|\bnot (of |on )?(the |an )?(ALB'?s? )?target group", re.I)


def test_grace_belongs_to_the_autoscaler_not_the_target_group(texts):
    for where, text in texts:
        for sentence in re.split(r"(?<=[.;:])\s", text):
            if re.search(r"target group", sentence) and re.search(r"grace", sentence):
                assert TARGET_GROUP_HAS_NO_GRACE.search(sentence), (where, sentence)
    lesson = text_of(texts, "lessons/07-health-check-design.md")
    assert "Auto Scaling group" in lesson and "ECS service" in lesson
    assert "30 to 900 s on an ALB target group, which has slow start but no grace period" in lesson


def test_modulo_ip_hash_keeps_a_fifth_of_clients_when_a_fifth_backend_joins(texts):
    four, five = backends("b1", "b2", "b3", "b4"), backends("b1", "b2", "b3", "b4", "b5")
    clients = client_ips(12_000)
    before = balancer("ip_hash", four)
    after = balancer("ip_hash", five)
    stayed = sum(before.pick(ctx(ip=ip), four).backend.name
                 == after.pick(ctx(ip=ip), five).backend.name for ip in clients) / len(clients)
    assert abs(stayed - 0.20) < 0.02, stayed
    assert "20 % stay, 80 % move" in text_of(texts, "lessons/05-hashing.md")
    assert "80 % of clients move" in text_of(texts, "drills/algorithms.yaml: ip-hash-rehash")


def test_virtual_node_spreads_are_the_rings(texts):
    clients = client_ips(40_000)

    def spread(virtual_nodes: int) -> list[int]:
        pool = backends("b1", "b2", "b3", "b4")
        ring = balancer("consistent_hash", pool, hash_key={"source": "client_ip"},
                        virtual_nodes=virtual_nodes)
        return sorted(Counter(ring.pick(ctx(ip=ip), pool).backend.name
                              for ip in clients).values())

    def rounded(n: int, step: int) -> str:
        return f"{round(n / step) * step:,}"

    one, many = spread(1), spread(160)
    lesson = text_of(texts, "lessons/05-hashing.md")
    # "split 880, 1,650, 15,900 and 21,600": each rounded as the lesson rounds it
    stated = [rounded(one[0], 10), rounded(one[1], 50), rounded(one[2], 100),
              rounded(one[3], 100)]
    assert f"split {stated[0]}, {stated[1]}, {stated[2]} and {stated[3]}" in lesson
    assert f"between {rounded(many[0], 100)} and {rounded(many[-1], 100)}" in lesson
    assert max(abs(n - 10_000) for n in many) / 10_000 < 0.15  # "within about 15 %"


def test_the_grace_pattern_catches_the_old_wording():
    old = ("health.grace is a period after a backend joins during which it is not checked (an "
           "ALB target group's health check grace period; an autoscaling group has one too).")
    sentence = re.split(r"(?<=[.;:])\s", old)[0]
    assert "grace" in sentence and not TARGET_GROUP_HAS_NO_GRACE.search(sentence)
    assert TARGET_GROUP_HAS_NO_GRACE.search("an ALB target group has no grace period.")


def test_not_answering_at_all_is_504_not_502(texts):
    for where, text in texts:
        for sentence in re.split(r"(?<=[.;])\s", text):
            if "502" in sentence and re.search(r"\bat all\b", sentence):
                assert "504" in sentence, (where, sentence)
    old = 'A 502 means "the backend answered badly or not at all".'
    assert "504" not in old and re.search(r"\bat all\b", old)  # the wording this catches
