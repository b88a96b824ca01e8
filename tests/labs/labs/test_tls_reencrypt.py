"""The TLS re-encryption lab in real runs: TLS toy backends from the lab PKI, an impostor
on b4's address (b4's names, a self-signed issuer), HTTPS customers checking the site's
certificate. The starting config (verify: false) sends the impostor a quarter of the
checkouts; the fix (verify: true, a retry, passive health) sends it none."""
from __future__ import annotations

import pytest

from labs.framework import definition, registry
from labs.framework.runner import RunOptions, run_lab

SLUG = "tls-reencrypt"


@pytest.fixture(scope="module")
def runs(lab_state):
    lab = registry.get(SLUG)
    return {label: run_lab(lab, text, RunOptions(state_dir=lab_state, label=label))
            for label, text in (("start", lab.topology_text()),
                                ("solution", lab.solution_text()))}


@pytest.mark.timeout(600)
def test_without_verification_the_impostor_gets_checkouts_and_nobody_notices(runs):
    start = runs["start"].result
    assert not start.passed
    m = start.metrics
    assert m["impostor"] > 0 and m["failed"] == 0 and m["plain"] == 0
    assert m["unverified"] == sum(m["per_backend"].values())
    assert start.evidence[0].startswith("FAIL") and "impostor" in start.evidence[0]


@pytest.mark.timeout(600)
def test_verification_refuses_the_impostor_before_any_request_byte(runs):
    fix = runs["solution"].result
    assert fix.passed, fix.evidence
    m = fix.metrics
    assert m["impostor"] == 0 and m["unverified"] == 0 and m["refused_handshakes"] >= 1
    assert set(m["per_backend"]) == {"b1", "b2", "b3"}
    assert any("certificate verify failed" in e for e in fix.evidence)


def test_tls_is_for_toy_http_backends_only():
    with pytest.raises(ValueError, match="tls is for kind: toy, mode: http"):
        definition.App(kind="toy", mode="udp", tls="own")
    with pytest.raises(ValueError, match="tls is for kind: toy, mode: http"):
        definition.App(kind="gunicorn", tls="own")
    assert definition.App(kind="toy", tls="wrong-selfsigned").tls == "wrong-selfsigned"
