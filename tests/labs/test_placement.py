"""Where a graded run's sandbox runs (labs/framework/placement.py): the site's driver
unless the lab needs what a container sandbox lacks; then processes (saying why) or a
refusal. One row per catalog lab, its starting config and its fix, on the container
driver: a lab added to the catalog must be placed here on purpose."""
from __future__ import annotations

import pytest

from labs.framework import placement, registry
from labs.framework.runner import check_document, parse_document

C, P = "containers", "processes"
# slug: (start, fix) -> where each runs when the site's driver is containers.
TABLE = {
    "l4-path-routing": (C, C),
    "slow-backend-p99": (C, C),
    "health-check-window": (C, C),
    "health-check-cascade": (C, C),
    "lying-health-check": (C, C),
    "sticky-hot-spot": (C, P),  # the fix keeps sessions in Redis
    "ip-hash-nat": (P, P),  # graded on each client's own address
    "drain-cuts-uploads": (C, C),
    "502-503-504": (C, C),
    "idle-timeout-upload": (C, C),
    "slow-start-grace": (C, C),
    "sni-mismatch": (P, P),  # the lab PKI
    "tls-reencrypt": (P, P),  # TLS toy backends, the lab PKI
    "rolling-deploy": (C, C),
    "keepalive-race": (P, P),  # gunicorn
    "grpc-l4-pinning": (P, P),  # gRPC toy backends
    "mixed-durations": (P, P),  # gunicorn
    "outlier-black-hole": (C, C),
    "balancer-ha": (P, P),  # two balancers, a floating address
    "udp-game-flows": (P, P),  # UDP
    "p2c-herding": (P, P),  # three balancers, gunicorn
    "cross-zone": (P, P),  # gunicorn
    "canary-rollback": (C, C),
    "retry-storm": (C, C),
    "websocket-reconnect-storm": (C, C),
}


def where(lab, text: str, site: str = C, fallback: str = "processes"):
    config, settings = check_document(lab, parse_document(text))
    return placement.decide(lab.spec, settings, config, site, fallback)


def test_the_table_names_every_catalog_lab():
    assert sorted(TABLE) == sorted(lab.slug for lab in registry.all_labs())


@pytest.mark.parametrize("slug", sorted(TABLE))
def test_each_lab_runs_where_the_table_says(slug):
    lab = registry.get(slug)
    got = (where(lab, lab.topology_text()).driver, where(lab, lab.solution_text()).driver)
    assert got == TABLE[slug]


def test_on_processes_every_lab_stays_on_processes_with_nothing_to_say():
    for lab in registry.all_labs():
        p = where(lab, lab.solution_text(), site=P)
        assert (p.driver, p.reasons, p.fell_back) == (P, (), False), lab.slug


def test_a_fallback_says_where_the_run_went_and_why():
    lab = registry.get("balancer-ha")
    p = where(lab, lab.solution_text(), site="swarm")
    assert p.fell_back and p.driver == P and p.site_driver == "swarm"
    assert p.to_json()["message"] == (
        "this run's sandbox ran as local processes, not in a swarm sandbox, because the lab "
        "needs 2 balancers side by side (sandbox.proxies); a floating address "
        "(sandbox.floating)")


def test_refuse_instead_of_falling_back_when_the_site_says_so():
    lab = registry.get("keepalive-race")
    p = where(lab, lab.topology_text(), fallback="refuse")
    assert p.refused and p.driver == C
    assert "cannot run in a containers sandbox here: it needs gunicorn" in p.message()
    assert "LBLAB_LABS_FALLBACK=processes" in p.message()
    # A lab the driver serves is never refused.
    l4 = registry.get("l4-path-routing")
    assert not where(l4, l4.topology_text(), fallback="refuse").refused


def test_the_learners_own_config_can_need_processes():
    lab = registry.get("slow-backend-p99")  # runs in a container with its own configs
    hashed = ("listeners: {web: {bind: 127.0.0.1:8080, protocol: http, routes: [all]}}\n"
              "routes: {all: {match: {}, forward: web}}\n"
              "pools: {web: {balancer: {algorithm: maglev}, backends: "
              "[{name: b1, address: 127.0.0.1:9001}, {name: b2, address: 127.0.0.1:9002}]}}\n")
    p = where(lab, hashed)
    assert p.driver == P and p.reasons == ("each client's own address (a pool hashes on "
                                           "client_ip)",)
    by_header = hashed.replace("algorithm: maglev", "algorithm: maglev, hash_key: "
                               "{source: header, name: X-User-Id}")
    assert where(lab, by_header).driver == C


def test_an_unknown_fallback_is_refused_with_the_choices():
    lab = registry.get("l4-path-routing")
    with pytest.raises(ValueError, match="choose processes or refuse"):
        where(lab, lab.topology_text(), fallback="maybe")
