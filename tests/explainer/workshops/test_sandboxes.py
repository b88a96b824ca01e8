"""Learners' sandboxes (real proxies and toy backends on loopback) and faults for everyone."""
import json
import urllib.request

import pytest

from explainer.workshops import selectors
from explainer.workshops.models import Participant
from explainer.workshops.services import sandboxes, workshops
from explainer.workshops.services.workshops import WorkshopError

pytestmark = pytest.mark.django_db(transaction=True)


def faults_of(backend_url: str) -> dict:
    with urllib.request.urlopen(f"{backend_url}/_control/faults", timeout=3) as resp:
        return json.load(resp)["faults"]


def test_sandboxes_faults_for_everyone_and_the_cap(workshop, sandbox_settings):
    ada, _ = workshops.join(workshop=workshop, learner_key="session:sb-ada", display_name="Ada")
    ben, _ = workshops.join(workshop=workshop, learner_key="session:sb-ben", display_name="Ben")
    cy, _ = workshops.join(workshop=workshop, learner_key="session:sb-cy", display_name="Cy")

    # On demand: the first call starts it, the next finds it running.
    first = sandboxes.ensure_sandbox(ada)
    assert first["started"] and first["sandbox"]["state"] == "running"
    assert first["sandbox"]["dashboard_url"] == f"/lab/{ada.sandbox_id}/"
    assert sandboxes.ensure_sandbox(ada)["started"] is False
    assert ada.sandbox_id == sandboxes.own_sandbox_id(ada)
    sandboxes.ensure_sandbox(ben)

    # The cap (two here) refuses a third with a message that says what to do.
    with pytest.raises(WorkshopError) as err:
        sandboxes.ensure_sandbox(cy)
    assert err.value.status == 503
    assert "The lab is full: 2 sandboxes are running" in err.value.message
    assert "Try again in about" in err.value.message and "instructor" in err.value.message
    cy.refresh_from_db()
    assert cy.sandbox_state == Participant.Sandbox.REFUSED

    # The same fault into each learner's own sandbox, one result per learner.
    injection = sandboxes.inject_fault_for_all(workshop, user=workshop.instructor, backend="b2",
                                               fault="slow", values={"latency_ms": 250})
    results = {r.participant.display_name: r for r in injection.results.all()}
    assert results["Ada"].ok and results["Ben"].ok and not results["Cy"].ok
    assert "b2: slow responses (latency_ms=250, jitter_ms=0)" == results["Ada"].message
    assert "Cy has no sandbox running" in results["Cy"].message
    svc = sandboxes.service()
    for p in (ada, ben):
        sb = svc.get(p.sandbox_id)
        assert faults_of(sb.backends["b2"])["latency_ms"] == 250
        assert faults_of(sb.backends["b1"])["latency_ms"] == 0  # only the chosen backend

    snap = selectors.cockpit(workshop)
    assert snap["last_injection"]["ok"] == 2 and snap["last_injection"]["total"] == 3
    by_name = {r["name"]: r for r in snap["learners"]}
    assert by_name["Ada"]["last_fault"]["ok"] is True
    assert by_name["Cy"]["last_fault"]["ok"] is False
    assert snap["counts"]["sandboxes"] == 2

    # A backend a sandbox does not have is that learner's failure, not an exception.
    missing = sandboxes.inject_fault_for_all(workshop, user=None, backend="b9", fault="hang")
    assert not any(r.ok for r in missing.results.all())
    assert "has no backend b9 (it has b1, b2)" in missing.results.get(participant=ada).message

    cleared = sandboxes.inject_fault_for_all(workshop, user=None, backend="b2", fault="clear")
    assert cleared.results.get(participant=ada).ok
    assert faults_of(svc.get(ada.sandbox_id).backends["b2"])["latency_ms"] == 0

    # Ending the workshop stops every learner's sandbox.
    workshops.end_workshop(workshop)
    assert svc.list() == []
    ada.refresh_from_db()
    assert ada.sandbox_state == Participant.Sandbox.STOPPED


def test_a_reaped_sandbox_shows_as_stopped(workshop, sandbox_settings):
    ada, _ = workshops.join(workshop=workshop, learner_key="session:sb-ada2", display_name="Ada")
    sandboxes.ensure_sandbox(ada)
    sandboxes.service().stop(ada.sandbox_id, grace=2.0)  # as the idle reaper would
    sandboxes.refresh_state(ada)
    assert ada.sandbox_state == Participant.Sandbox.STOPPED
    assert "Press Start" in ada.sandbox_message


def test_fault_for_nobody_is_refused(workshop):
    with pytest.raises(WorkshopError) as err:
        sandboxes.inject_fault_for_all(workshop, user=None, backend="b1", fault="slow")
    assert "nobody has joined" in err.value.message
    workshops.join(workshop=workshop, learner_key="session:x", display_name="X")
    with pytest.raises(WorkshopError):
        sandboxes.inject_fault_for_all(workshop, user=None, backend="b1", fault="explode")
