"""Controls that need the supervisor: restart a killed backend, part status, traffic runs.

A real sandbox from labs.sandbox.SandboxService (its own state dir), seen by the site
the way the launcher's default sandbox is: by id, without LBLAB_ADMIN_URL.
"""
import pytest
from django.test import Client

from explainer.services import sandboxes
from labs.sandbox.admin_client import AdminClient
from tests.explainer.parts import wait_until

FAST_HEALTH = {"type": "http", "path": "/health", "interval": "200ms", "timeout": "150ms",
               "unhealthy_threshold": 2, "healthy_threshold": 2}


@pytest.fixture
def managed(tmp_path, monkeypatch, settings):
    from labs.sandbox import SandboxService
    from labs.sandbox.topology import default_config

    state_dir = tmp_path / "state"
    monkeypatch.setenv("LBLAB_STATE_DIR", str(state_dir))
    settings.LBLAB_ADMIN_URL = ""
    settings.LBLAB_SANDBOX = "expl"
    settings.LBLAB_EMBEDDED_BRIDGE = False
    config = default_config(["b1", "b2"])
    config["pools"]["web"]["health"] = FAST_HEALTH
    svc = SandboxService(state_dir=state_dir)
    sb = svc.create("expl", backends=["b1", "b2"], config=config, timeout=20)
    try:
        yield sb
    finally:
        svc.stop("expl", grace=3)


def post(client, action, data):
    token = client.get("/").cookies["csrftoken"].value
    resp = client.post(f"/api/expl/control/{action}", {**data, "csrfmiddlewaretoken": token})
    return resp.status_code, resp.json()


def health_of(sb, name):
    state = AdminClient(sb.admin_url).state()
    return next(b["health"] for b in state["pools"]["web"]["backends"] if b["name"] == name)


def test_kill_shows_in_parts_then_restart_brings_it_back(managed):
    client = Client(enforce_csrf_checks=True)
    ref = sandboxes.get_sandbox("expl")
    assert ref.managed and ref.admin_url == managed.admin_url and set(ref.backends) == {"b1", "b2"}
    wait_until(lambda: health_of(managed, "b2") == "healthy", 10, what="b2 healthy")

    status, body = post(client, "fault", {"backend": "b2", "fault": "kill"})
    assert status == 200, body
    parts = wait_until(lambda: (p := sandboxes.service().parts("expl"))["b2"]["alive"] is False
                       and "not running" in p["b2"]["detail"] and p, 5, what="b2 reported dead")
    assert parts["proxy"]["alive"] and parts["b1"]["alive"]
    wait_until(lambda: health_of(managed, "b2") == "unhealthy", 5, what="b2 unhealthy")

    status, body = post(client, "restart", {"backend": "b2"})
    assert status == 200, body
    assert sandboxes.service().parts("expl")["b2"]["alive"] is True
    wait_until(lambda: health_of(managed, "b2") == "healthy", 10, what="b2 healthy again")

    status, body = post(client, "restart", {"backend": "b9"})
    assert status == 409 and "no backend 'b9'" in body["error"]


def test_traffic_start_progress_stop(managed):
    client = Client(enforce_csrf_checks=True)
    assert client.get("/api/expl/traffic").json()["state"] == "idle"
    status, body = post(client, "traffic-start", {"profile": "steady", "users": "2",
                                                  "duration_s": "30"})
    assert status == 200, body
    run_id = body["run"]["run_id"]

    def requests_flowing():
        st = client.get("/api/expl/traffic").json()
        return st if st["state"] == "running" and (st["stats"] or {}).get("requests") else None
    status_now = wait_until(requests_flowing, timeout=20, interval=0.3, what="traffic flowing")
    assert status_now["run_id"] == run_id and 0 < status_now["progress"] < 1

    status, body = post(client, "traffic-stop", {})
    assert status == 200 and body["run"]["state"] == "stopped"
    assert client.get("/api/expl/traffic").json()["state"] == "stopped"

    status, body = post(client, "traffic-start", {"profile": "nope", "users": "2",
                                                  "duration_s": "5"})
    assert status == 400 and body["errors"][0]["path"] == "profile"


def test_an_unknown_sandbox_never_names_the_others(managed):
    with pytest.raises(sandboxes.SandboxError) as info:
        sandboxes.get_sandbox("missing")
    assert "'missing'" in info.value.message
    assert "expl" not in info.value.message  # other sandboxes' ids are other learners' own
