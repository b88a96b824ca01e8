"""The address rule on the site's input paths: dashboard controls and lesson presets.

A real sandbox (the shared default one, supervised) and a real proxy started by hand
(LBLAB_ADMIN_URL): ``add-backend 192.0.2.1:80`` is refused with what to use instead, and
the proxy's config is unchanged; the sandbox's own backend is accepted.
"""
from __future__ import annotations

import pytest
from django.test import Client

from explainer.course.services import sandbox as course_sandbox
from labs.sandbox import SandboxService
from labs.sandbox.admin_client import AdminClient
from labs.sandbox.topology import default_config


@pytest.fixture
def shared(tmp_path, monkeypatch, settings, db):
    state = tmp_path / "state"
    monkeypatch.setenv("LBLAB_STATE_DIR", str(state))
    settings.LBLAB_LABS_STATE_DIR = str(state)
    settings.LBLAB_ADMIN_URL = ""
    settings.LBLAB_SANDBOX = "default"
    settings.LBLAB_EMBEDDED_BRIDGE = False
    svc = SandboxService(state)
    sb = svc.create("default", backends=2, timeout=20)
    try:
        yield sb
    finally:
        svc.stop("default", grace=2)


def add_backend(client: Client, address: str, name: str = "extra"):
    token = client.get("/").cookies["csrftoken"].value
    return client.post("/api/default/control/add-backend",
                       {"pool": "web", "name": name, "address": address, "weight": "1",
                        "csrfmiddlewaretoken": token})


def backend_addresses(sb) -> list[str]:
    state = AdminClient(sb.admin_url).state()
    return [b["address"] for b in state["pools"]["web"]["backends"]]


def test_the_dashboard_refuses_a_backend_outside_the_sandbox(shared):
    client = Client(enforce_csrf_checks=True)
    before = backend_addresses(shared)
    for address in ["192.0.2.1:80", f"127.0.0.1:{shared.ports['admin']}", "127.0.0.1:8000"]:
        resp = add_backend(client, address)
        assert resp.status_code == 422, address
        body = resp.json()
        assert f"{address} is not one of your sandbox's backends" in body["error"]
        assert f"b1 = 127.0.0.1:{shared.ports['b1']}" in body["error"]
    assert backend_addresses(shared) == before
    resp = add_backend(client, f"localhost:{shared.ports['b2']}", name="b2again")
    assert resp.status_code == 200, resp.json()
    assert len(backend_addresses(shared)) == len(before) + 1


def test_a_proxy_started_by_hand_only_takes_addresses_it_already_has(lab, site_on, db):
    site_on(lab)
    client = Client(enforce_csrf_checks=True)
    resp = add_backend(client, "192.0.2.1:80")
    assert resp.status_code == 422
    assert "is not one of this proxy's backend addresses" in resp.json()["error"]
    known = backend_addresses(lab)[0]
    assert add_backend(client, known, name="again").status_code == 200


def test_a_preset_pointing_outside_the_sandbox_is_refused(shared):
    config = default_config(["b1", "b2"])
    config["pools"]["web"]["backends"].append({"name": "outside", "address": "192.0.2.1:80"})
    with pytest.raises(course_sandbox.SandboxUnavailable) as info:
        course_sandbox.apply(shared, config)
    assert info.value.status == 422
    assert info.value.errors[0]["path"] == "pools.web.backends[2].address"
    assert "192.0.2.1:80" not in backend_addresses(shared)
