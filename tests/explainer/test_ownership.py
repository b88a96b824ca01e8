"""Two learners, separate sessions: each sees and changes only their own sandbox.

Ada owns a real sandbox (its id derived from her learner key, as the course, the labs and
workshops derive it). Bob tries every page, API and socket of it and gets what he gets
for a sandbox that does not exist: 404 (the socket's handshake refused). Ada's
instructor may open it; nothing Bob receives names Ada's id.
"""
from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.test import Client

from labs.sandbox import SandboxService
from labs.services.sandboxes import sandbox_id_for
from lblab.asgi import application

GETS = ["/lab/{id}/", "/api/{id}/snapshot", "/api/{id}/requests/r-1/diagram",
        "/api/{id}/connections/c-1/diagram", "/api/{id}/connections",
        "/api/{id}/health/web/b1/diagram", "/api/{id}/traffic"]
ACTIONS = ["algorithm", "weight", "add-backend", "remove-backend", "intent", "health", "fault",
           "restart", "traffic-start", "listener-mode", "traffic-stop", "no-such-action"]


def learner(client: Client) -> str:
    client.get("/labs/")  # the labs page gives a visitor their learner key (a session)
    return f"s:{client.cookies['sessionid'].value}"


def csrf(client: Client) -> str:
    return client.get("/").cookies["csrftoken"].value


@pytest.fixture
def two_learners(tmp_path, monkeypatch, settings, db):
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
        svc.stop(sb.id, grace=2)


def test_the_owner_sees_her_dashboard_and_others_get_404_everywhere(two_learners):
    ada, bob, sb = two_learners
    assert ada.get(f"/lab/{sb.id}/").status_code == 200
    paint = ada.get(f"/api/{sb.id}/snapshot").json()
    assert paint["sandbox"] == sb.id and paint["proxy"]["reachable"] is True

    anonymous = Client()
    for template in GETS:
        url = template.format(id=sb.id)
        for other in (bob, anonymous):
            resp = other.get(url)
            assert resp.status_code == 404, url
            assert sb.id not in resp.content.decode(), url
    token = csrf(bob)
    for action in ACTIONS:
        resp = bob.post(f"/api/{sb.id}/control/{action}",
                        {"backend": "b1", "fault": "kill", "csrfmiddlewaretoken": token})
        assert resp.status_code == 404, action
    # Bob's attempts changed nothing: b1 still runs
    assert sb.alive("b1")


def test_nothing_bob_gets_lists_other_sandboxes(two_learners):
    ada, bob, sb = two_learners
    for url in ["/", "/api/default/snapshot", "/labs/", "/course/", "/api/nope/snapshot",
                "/lab/nope/"]:
        assert sb.id not in bob.get(url).content.decode(), url


def test_an_instructor_may_open_their_learners_sandbox(two_learners):
    from explainer.workshops.models import Participant, Workshop

    ada, bob, sb = two_learners
    ada_key = f"s:{ada.cookies['sessionid'].value}"
    teacher = User.objects.create_user("teacher", password="pw-12345-long")
    teacher.user_permissions.add(Permission.objects.get(codename="run_workshop"))
    other = User.objects.create_user("other", password="pw-12345-long")
    other.user_permissions.add(Permission.objects.get(codename="run_workshop"))
    workshop = Workshop.objects.create(title="W", instructor=teacher, code="ABC123")
    Participant.objects.create(workshop=workshop, learner_key=ada_key, display_name="Ada",
                               sandbox_id=sb.id)
    mine, theirs = Client(), Client()
    mine.force_login(teacher)
    theirs.force_login(other)
    assert mine.get(f"/lab/{sb.id}/").status_code == 200
    assert mine.get(f"/api/{sb.id}/traffic").status_code != 404
    assert theirs.get(f"/lab/{sb.id}/").status_code == 404


def test_the_shared_default_sandbox_is_read_only_for_visitors_in_public_mode(two_learners,
                                                                              settings):
    ada, bob, sb = two_learners
    settings.LBLAB_DEFAULT_SANDBOX_WRITERS = "staff"
    page = bob.get("/")
    assert page.status_code == 200 and page.context["can_change"] is False
    resp = bob.post("/api/default/control/weight",
                    {"pool": "web", "backend": "b1", "weight": "5",
                     "csrfmiddlewaretoken": csrf(bob)})
    assert resp.status_code == 403
    assert "read-only" in resp.json()["error"]
    settings.LBLAB_DEFAULT_SANDBOX_WRITERS = "anyone"
    assert bob.get("/").context["can_change"] is True


async def _socket(session: str | None, sandbox_id: str):
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if session:
        headers.append((b"cookie", f"sessionid={session}".encode()))
    comm = WebsocketCommunicator(application, f"/ws/lab/{sandbox_id}/", headers=headers)
    connected, _ = await comm.connect(timeout=10)
    paint = await comm.receive_json_from(timeout=10) if connected else None
    await comm.disconnect()
    return connected, paint


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_only_the_owner_joins_the_sandboxs_socket(two_learners):
    ada, bob, sb = two_learners
    connected, paint = await _socket(ada.cookies["sessionid"].value, sb.id)
    assert connected and paint["kind"] == "first_paint" and paint["sandbox"] == sb.id
    for session in (bob.cookies["sessionid"].value, None):
        connected, _ = await _socket(session, sb.id)
        assert connected is False
    connected, paint = await _socket(bob.cookies["sessionid"].value, "default")
    assert connected  # the shared one is open to watch


def test_the_owner_restarts_a_dead_proxy_from_the_site(two_learners):
    import os
    import signal

    from labs.sandbox import procs

    ada, bob, sb = two_learners
    os.kill(sb.pids["proxy"], signal.SIGKILL)
    deadline = __import__("time").monotonic() + 5
    while sb.alive("proxy"):
        assert __import__("time").monotonic() < deadline
    paint = ada.get(f"/api/{sb.id}/snapshot").json()
    assert paint["parts"]["proxy"]["alive"] is False and "not running" in paint["parts"]["proxy"]["detail"]
    token = csrf(bob)
    assert bob.post(f"/api/{sb.id}/control/restart",
                    {"backend": "proxy", "csrfmiddlewaretoken": token}).status_code == 404
    resp = ada.post(f"/api/{sb.id}/control/restart",
                    {"backend": "proxy", "csrfmiddlewaretoken": csrf(ada)})
    assert resp.status_code == 200, resp.content
    assert "Restarted the proxy" in resp.json()["message"]
    paint = ada.get(f"/api/{sb.id}/snapshot").json()
    assert paint["parts"]["proxy"]["alive"] is True and paint["proxy"]["reachable"] is True
    assert procs.port_free("127.0.0.1", sb.ports["proxy"]) is False
