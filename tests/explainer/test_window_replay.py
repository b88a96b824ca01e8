"""Replay from the dashboard: the owner's window replays; nobody else reaches it.

Ada owns a real sandbox. With no traffic the form says what to do; after real requests
through her proxy she replays the last 30 s under two algorithms (the background replay
runs to the end in real sandboxes) and sees the side-by-side page. Bob, with his own
session, gets 404 for her form, her replay page and its status, as for a sandbox that
does not exist, and nothing he gets names her sandbox.
"""
from __future__ import annotations

import re
import time
import urllib.request

import pytest
from django.test import Client

from labs.sandbox import SandboxService
from labs.services.sandboxes import sandbox_id_for
from tests.explainer.test_ownership import csrf, learner
from tests.labs.replay.test_window_real import wait_ready


@pytest.fixture
def ada_and_bob(tmp_path, monkeypatch, settings, db):
    state = tmp_path / "state"
    monkeypatch.setenv("LBLAB_STATE_DIR", str(state))
    settings.LBLAB_LABS_STATE_DIR = str(state)
    settings.LBLAB_ADMIN_URL = ""
    settings.LBLAB_SANDBOX = "default"
    settings.LBLAB_EMBEDDED_BRIDGE = False
    ada, bob = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    ada_key = learner(ada)
    learner(bob)
    svc = SandboxService(state)
    sb = svc.create(sandbox_id_for(ada_key), backends=2, owner=ada_key, timeout=20)
    try:
        yield ada, bob, sb
    finally:
        for other in svc.list():
            svc.stop(other.id, grace=2)


def post_form(client: Client, sb, seconds="30",
              algorithms=("round_robin", "least_outstanding_requests")):
    return client.post(f"/lab/{sb.id}/replay/", {"seconds": seconds, "algorithm": algorithms,
                                                "csrfmiddlewaretoken": csrf(client)})


def test_the_owner_replays_a_window_and_nobody_else_sees_it(ada_and_bob):
    ada, bob, sb = ada_and_bob
    page = ada.get(f"/lab/{sb.id}/replay/")
    assert page.status_code == 200 and "Replay the last" in page.content.decode()

    quiet = post_form(ada, sb)
    assert quiet.status_code == 400
    assert "saw 0 HTTP requests" in quiet.content.decode()
    assert post_form(ada, sb, seconds="600").status_code == 400

    wait_ready(sb.admin_url)
    for i in range(30):
        with urllib.request.urlopen(f"{sb.proxy_url}/work?ms={i % 3}", timeout=10) as resp:
            assert resp.status == 200
    started = post_form(ada, sb)
    assert started.status_code == 302, started.content.decode()[:500]
    url = started["Location"]
    assert re.fullmatch(rf"/lab/{sb.id}/replays/\d{{8}}-\d{{6}}-[0-9a-f]{{6}}/[^/]+/", url)

    deadline = time.monotonic() + 120
    while (state := ada.get(url + "?format=json").json())["state"] == "running":
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["state"] == "done", state
    shown = ada.get(url).content.decode()
    assert "30 requests" in shown and "least_outstanding_requests" in shown
    assert "Where the runs part ways" in shown

    for other in (bob, Client()):
        for path in (f"/lab/{sb.id}/replay/", url, url + "?format=json"):
            resp = other.get(path)
            assert resp.status_code == 404, path
            assert sb.id not in resp.content.decode(), path
    assert post_form(bob, sb).status_code == 404
