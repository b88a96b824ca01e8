"""The dashboard's controls: CSRF-protected POSTs that really change a real proxy and backends."""
import json
import urllib.request

import pytest
from django.test import Client

from labs.sandbox.admin_client import AdminClient, BackendControl
from tests.explainer.parts import wait_until

URL = "/api/default/control/"


@pytest.fixture
def client():
    """A browser-like client: CSRF enforced, token taken from the page like the JS does."""
    c = Client(enforce_csrf_checks=True)
    return c


def token_for(client) -> str:
    page = client.get("/")
    assert page.status_code == 200
    return page.cookies["csrftoken"].value


def post(client, action, data, token=None):
    token = token or token_for(client)
    resp = client.post(URL + action, {**data, "csrfmiddlewaretoken": token})
    return resp.status_code, resp.json()


def backend(state, name):
    return next(b for b in state["pools"]["web"]["backends"] if b["name"] == name)


def test_a_post_without_csrf_token_is_refused(site_on, lab, client):
    site_on(lab)
    resp = client.post(URL + "weight", {"pool": "web", "backend": "b1", "weight": "3"})
    assert resp.status_code == 403
    assert backend(AdminClient(lab.admin_url).state(), "b1")["weight"] == 1


def test_the_page_renders_with_its_controls_and_vendored_libs(site_on, lab, client):
    site_on(lab)
    page = client.get("/").content.decode()
    assert 'data-ws-path="/ws/lab/default/"' in page
    assert "/static/vendor/mermaid-11.17.2/mermaid.min.js" in page
    assert "/static/vendor/uplot-1.6.32/uPlot.iife.min.js" in page
    assert 'role="log"' in page and 'aria-live="polite"' in page
    assert "csrfmiddlewaretoken" in page
    assert 'src="http' not in page and 'href="http' not in page  # nothing from a CDN
    for algorithm in ("round_robin", "least_connections", "maglev"):
        assert f'<option value="{algorithm}">' in page


def test_set_weight_and_a_refused_weight_shows_the_proxy_error(site_on, lab, client):
    site_on(lab)
    token = token_for(client)
    status, body = post(client, "weight", {"pool": "web", "backend": "b1", "weight": "3"}, token)
    assert status == 200 and body["ok"] and body["message"] == "b1 now has weight 3."
    assert backend(body["state"], "b1")["weight"] == 3
    assert backend(AdminClient(lab.admin_url).state(), "b1")["weight"] == 3

    status, body = post(client, "weight", {"pool": "web", "backend": "b1", "weight": "5000"}, token)
    assert status == 422 and body["ok"] is False
    error = next(e for e in body["errors"] if e["path"] == "pools.web.backends[0].weight")
    assert "1000" in error["message"]  # the proxy's own words about its limit
    assert backend(AdminClient(lab.admin_url).state(), "b1")["weight"] == 3  # unchanged

    status, body = post(client, "weight", {"pool": "web", "backend": "b1", "weight": "three"}, token)
    assert status == 400 and body["errors"][0]["path"] == "weight"


def test_switch_algorithm(site_on, lab, client):
    site_on(lab)
    status, body = post(client, "algorithm", {"pool": "web", "algorithm": "least_connections"})
    assert status == 200, body
    assert body["state"]["pools"]["web"]["algorithm"] == "least_connections"
    status, body = post(client, "algorithm", {"pool": "web", "algorithm": "maglev",
                                              "table_size": "100"})
    assert status == 422
    assert any(e["path"] == "pools.web.balancer.table_size" and "prime" in e["message"]
               for e in body["errors"])


def test_health_settings_are_merged_and_validated_by_the_proxy(site_on, lab, client):
    site_on(lab)
    token = token_for(client)
    status, body = post(client, "health", {"pool": "web", "enabled": "on", "type": "http",
                                           "path": "/health", "interval": "300ms",
                                           "timeout": "200ms", "unhealthy_threshold": "3",
                                           "healthy_threshold": "1"}, token)
    assert status == 200, body
    check = body["state"]["pools"]["web"]["health_check"]
    assert (check["interval"], check["unhealthy_threshold"], check["healthy_threshold"]) == \
        ("300ms", 3, 1)
    status, body = post(client, "health", {"pool": "web", "enabled": "on", "interval": "soon",
                                           "timeout": "200ms", "unhealthy_threshold": "3",
                                           "healthy_threshold": "1"}, token)
    assert status == 422
    assert [e["path"] for e in body["errors"]] == ["pools.web.health.interval"]
    status, body = post(client, "health", {"pool": "web"}, token)  # unchecked box: off
    assert status == 200 and body["state"]["pools"]["web"]["health_check"] is None


def test_backend_verbs_add_drain_remove(site_on, lab, client):
    site_on(lab)
    token = token_for(client)
    # The address rule: only an address this proxy already uses (b1's, under a new name).
    status, body = post(client, "add-backend", {"pool": "web", "name": "b3",
                                                "address": "127.0.0.1:1", "weight": "2"}, token)
    assert status == 422 and "not one of this proxy's backend addresses" in body["error"]
    b1 = lab.backend_url("b1").split("://", 1)[1].rstrip("/")
    status, body = post(client, "add-backend", {"pool": "web", "name": "b3",
                                                "address": b1, "weight": "2"}, token)
    assert status == 200 and backend(body["state"], "b3")["weight"] == 2
    status, body = post(client, "add-backend", {"pool": "web", "name": "b4",
                                                "address": "no-port", "weight": "1"}, token)
    assert status == 422 and "host:port" in body["errors"][0]["message"]
    status, body = post(client, "intent", {"pool": "web", "backend": "b2", "verb": "maintenance"},
                        token)
    assert status == 200 and backend(body["state"], "b2")["intent"] == "maintenance"
    status, body = post(client, "intent", {"pool": "web", "backend": "b2", "verb": "activate"},
                        token)
    assert status == 200 and backend(body["state"], "b2")["intent"] == "active"
    status, body = post(client, "intent", {"pool": "web", "backend": "b2", "verb": "drain"}, token)
    assert status == 200 and backend(body["state"], "b2")["intent"] == "draining"
    status, body = post(client, "remove-backend", {"pool": "web", "backend": "b3"}, token)
    assert status == 200
    assert [b["name"] for b in body["state"]["pools"]["web"]["backends"]] == ["b1", "b2"]
    status, body = post(client, "remove-backend", {"pool": "web", "backend": "zz"}, token)
    assert status == 404 and "no backend named 'zz'" in body["error"]


def test_faults_reach_the_toy_backend_and_kill_kills_it(site_on, lab, client):
    site_on(lab)
    token = token_for(client)
    status, body = post(client, "fault", {"backend": "b1", "fault": "slow", "latency_ms": "300",
                                          "jitter_ms": "0"}, token)
    assert status == 200, body
    assert BackendControl(lab.backend_url("b1")).faults()["faults"]["latency_ms"] == 300
    status, body = post(client, "fault", {"backend": "b1", "fault": "errors", "error_rate": "2"},
                        token)
    assert status == 400 and body["errors"][0]["path"] == "error_rate"
    status, body = post(client, "fault", {"backend": "b1", "fault": "clear"}, token)
    assert status == 200
    assert BackendControl(lab.backend_url("b1")).faults()["faults"]["latency_ms"] == 0

    status, body = post(client, "fault", {"backend": "b2", "fault": "kill"}, token)
    assert status == 200 and "Killed b2" in body["message"]
    lab.procs["b2"].wait(5)

    def b2_unhealthy():
        return backend(AdminClient(lab.admin_url).state(), "b2")["health"] == "unhealthy"
    wait_until(b2_unhealthy, timeout=5, what="b2 unhealthy after the kill")

    # This sandbox was started by hand: the site says how to restart it instead.
    status, body = post(client, "restart", {"backend": "b2"}, token)
    assert status == 409
    assert f"python -m labs.backend --name b2 --port {lab.backends['b2']}" in body["error"]


def test_an_unreachable_proxy_is_a_clear_502(site_on, dead_admin_url, client):
    site_on(admin_url=dead_admin_url)
    status, body = post(client, "weight", {"pool": "web", "backend": "b1", "weight": "2"})
    assert status == 502 and "does not answer" in body["error"]


def test_request_and_health_diagrams(site_on, lab, client):
    site_on(lab)
    with urllib.request.urlopen(f"{lab.proxy_url}/x", timeout=3) as resp:
        request_id = resp.headers["X-Request-Id"]
    body = client.get(f"/api/default/requests/{request_id}/diagram").json()
    assert body["ok"] and body["diagram"].startswith("sequenceDiagram")
    assert "C->>P: GET /x" in body["diagram"] and body["termination"] == "finished normally"
    resp = client.get("/api/default/requests/nope/diagram")
    assert resp.status_code == 404 and "no request with id 'nope'" in resp.json()["error"]
    body = client.get("/api/default/health/web/b1/diagram").json()
    assert body["ok"] and "participant B as backend b1" in body["diagram"]
    assert "health initial → healthy" in body["diagram"]


def test_snapshot_is_the_first_paint_over_http(site_on, lab, client):
    site_on(lab)
    body = client.get("/api/default/snapshot").json()
    assert body["kind"] == "first_paint" and body["proxy"]["reachable"] is True
    assert json.dumps(body)  # plain JSON


def test_unknown_sandbox_ids_are_404(client):
    assert client.get("/lab/bad%20id/").status_code == 404
    assert client.post("/api/default/control/nope", {}).status_code == 403  # CSRF first
