"""The workshop pages over HTTP: who may see what, CSRF on every control, CSV, the command."""
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from explainer.workshops.models import Participant, Workshop
from explainer.workshops.services import workshops
from tests.explainer.workshops.conftest import PASSWORD, client, join_as

pytestmark = pytest.mark.django_db


def test_instructor_pages_need_a_login(workshop):
    anon = client()
    for url in ("/workshops/", f"/workshops/{workshop.pk}/", f"/workshops/{workshop.pk}/present/",
                f"/workshops/{workshop.pk}/results.csv", f"/workshops/{workshop.pk}/cockpit.json"):
        resp = anon.get(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/workshops/login/?next=")
    assert anon.post(f"/workshops/{workshop.pk}/control/end").status_code == 302
    assert Workshop.objects.get(pk=workshop.pk).is_open


def test_login_page_and_a_user_who_is_not_an_instructor(instructor):
    get_user_model().objects.create_user("pat", password=PASSWORD)
    c = client()
    assert c.get("/workshops/login/").status_code == 200
    bad = c.post("/workshops/login/", {"username": "ines", "password": "wrong"})
    assert bad.status_code == 200 and b"do not match" in bad.content
    ok = c.post("/workshops/login/", {"username": "pat", "password": PASSWORD})
    assert ok.status_code == 302 and ok["Location"] == "/workshops/"
    resp = c.get("/workshops/")
    assert resp.status_code == 403 and b"createinstructor pat" in resp.content


def test_instructor_creates_a_workshop_and_sees_only_their_own(instructor_client, other_instructor):
    resp = instructor_client.post("/workshops/", {"title": "Tuesday cohort"})
    assert resp.status_code == 302
    mine = Workshop.objects.get(title="Tuesday cohort")
    assert resp["Location"] == f"/workshops/{mine.pk}/"
    page = instructor_client.get(resp["Location"])
    assert page.status_code == 200 and mine.code.encode() in page.content
    assert instructor_client.post("/workshops/", {"title": ""}).status_code == 400
    theirs = workshops.create_workshop(instructor=other_instructor, title="Not yours")
    assert instructor_client.get(f"/workshops/{theirs.pk}/").status_code == 404
    assert instructor_client.get(f"/workshops/{theirs.pk}/results.csv").status_code == 404
    listing = instructor_client.get("/workshops/").content.decode()
    assert "Tuesday cohort" in listing and "Not yours" not in listing


def test_every_control_is_csrf_protected(instructor, workshop):
    strict = Client(HTTP_HOST="127.0.0.1", enforce_csrf_checks=True)
    strict.force_login(instructor)
    for action in ("present-start", "present-stop", "present-view", "inject-fault", "end",
                   "stop-sandbox"):
        assert strict.post(f"/workshops/{workshop.pk}/control/{action}").status_code == 403
    page = strict.get(f"/workshops/{workshop.pk}/")
    token = page.cookies["csrftoken"].value
    resp = strict.post(f"/workshops/{workshop.pk}/control/present-start", {},
                       HTTP_X_CSRFTOKEN=token)
    assert resp.status_code == 200 and resp.json()["present"]["on"] is True
    # Learners' posts too.
    learner = Client(HTTP_HOST="127.0.0.1", enforce_csrf_checks=True)
    assert learner.post("/workshops/join/", {"code": workshop.code,
                                             "display_name": "Eve"}).status_code == 403
    learner.get("/workshops/join/")
    token = learner.cookies["csrftoken"].value
    assert learner.post("/workshops/join/", {"code": workshop.code, "display_name": "Eve",
                                             "csrfmiddlewaretoken": token}).status_code == 302
    assert learner.post(f"/workshops/w/{workshop.code}/hand", {"raised": "on"}).status_code == 403
    assert learner.post(f"/workshops/w/{workshop.code}/sandbox").status_code == 403


def test_learners_join_without_an_account_and_see_only_their_own_work(workshop, instructor_client):
    ada = join_as(workshop, "Ada")
    ben = join_as(workshop, "Ben")
    page = ada.get(f"/workshops/w/{workshop.code}/")
    assert page.status_code == 200 and b"Hi Ada" in page.content and b"Ben" not in page.content
    p_ada = Participant.objects.get(display_name="Ada")
    p_ben = Participant.objects.get(display_name="Ben")
    detail = f"/workshops/{workshop.pk}/learners/{p_ada.pk}/"
    assert ada.get(detail).status_code == 200
    assert ben.get(detail).status_code == 403
    assert client().get(detail).status_code == 403
    assert instructor_client.get(detail).status_code == 200
    # Ada's JSON is hers; learners cannot reach the cockpit or the CSV.
    me = ada.get(f"/workshops/w/{workshop.code}/me.json").json()
    assert me["me"]["name"] == "Ada" and "Ben" not in str(me)
    assert ben.get(f"/workshops/{workshop.pk}/cockpit.json").status_code == 302
    assert ben.get(f"/workshops/{workshop.pk}/results.csv").status_code == 302
    # Someone who has not joined is sent to the join form, and gets 403 on the JSON.
    stranger = client()
    resp = stranger.get(f"/workshops/w/{workshop.code}/")
    assert resp.status_code == 302 and resp["Location"] == f"/workshops/join/{workshop.code}/"
    refused = stranger.get(f"/workshops/w/{workshop.code}/me.json")
    assert refused.status_code == 403
    assert refused.json() == {"ok": False, "error": "join this workshop first",
                              "errors": [{"path": "workshop",
                                          "message": "join this workshop first"}]}
    assert stranger.get(f"/workshops/w/{workshop.code}/screen/").status_code == 403
    # A learner id from another workshop is not found.
    assert instructor_client.get(f"/workshops/{workshop.pk}/learners/{p_ben.pk + 999}/").status_code == 404


def test_join_form_errors_say_what_to_change(workshop):
    c = client()
    resp = c.post("/workshops/join/", {"code": "NOPE22", "display_name": "Ada"})
    assert resp.status_code == 404 and b"check it with your instructor" in resp.content
    join_as(workshop, "Ada")
    resp = c.post("/workshops/join/", {"code": workshop.code, "display_name": "ada"})
    assert resp.status_code == 409 and b"already called" in resp.content
    prefilled = c.get(f"/workshops/join/{workshop.code.lower()}/")
    assert prefilled.status_code == 200 and workshop.code.encode() in prefilled.content


def test_hand_and_presenter_views(workshop, instructor_client):
    ada = join_as(workshop, "Ada")
    resp = ada.post(f"/workshops/w/{workshop.code}/hand", {"raised": "on"})
    assert resp.json() == {"ok": True, "raised": True,
                           "message": "Your instructor sees your raised hand."}
    snap = instructor_client.get(f"/workshops/{workshop.pk}/cockpit.json").json()
    assert snap["learners"][0]["hand_raised_at"] and snap["counts"]["hands"] == 1
    base = f"/workshops/{workshop.pk}/control/"
    assert instructor_client.post(base + "present-view", {"tab": "tab-faults"}).status_code == 409
    assert instructor_client.post(base + "present-start", {}).json()["ok"]
    assert instructor_client.post(base + "present-view", {"tab": "tab-faults", "scroll": "0.5"}).json() == {"ok": True, "seq": 1}
    assert instructor_client.post(base + "present-view", {"scroll": "3"}).status_code == 400
    assert instructor_client.post(base + "nope", {}).status_code == 404
    screen = ada.get(f"/workshops/w/{workshop.code}/screen/")
    assert screen.status_code == 200 and screen["X-Frame-Options"] == "SAMEORIGIN"
    assert b'data-sandbox="default"' in screen.content
    assert instructor_client.get(f"/workshops/{workshop.pk}/present/").status_code == 200


def test_results_csv(workshop, instructor_client):
    join_as(workshop, "Ada")
    join_as(workshop, "Ben")
    resp = instructor_client.get(f"/workshops/{workshop.pk}/results.csv")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/csv")
    assert f'filename="workshop-{workshop.code}-load-balancing-101.csv"' in resp["Content-Disposition"]
    lines = resp.content.decode().splitlines()
    assert lines[0].split(",")[:3] == ["display_name", "joined_at", "last_seen_at"]
    assert [line.split(",")[0] for line in lines[1:]] == ["Ada", "Ben"]


def test_createinstructor_command():
    out = io.StringIO()
    call_command("createinstructor", "ivy", "--password-stdin", stdin=io.StringIO("Long-enough-pw-77\n"),
                 stdout=out)
    assert "ivy is an instructor" in out.getvalue()
    ivy = get_user_model().objects.get(username="ivy")
    assert ivy.has_perm("workshops.run_workshop") and not ivy.is_staff
    assert ivy.check_password("Long-enough-pw-77")
    with pytest.raises(CommandError, match="exists already"):
        call_command("createinstructor", "ivy", "--password-stdin", stdin=io.StringIO("x\n"))
    with pytest.raises(CommandError, match="password refused"):
        call_command("createinstructor", "joe", "--password-stdin", stdin=io.StringIO("123\n"))
    get_user_model().objects.create_user("kim", password=PASSWORD)
    call_command("createinstructor", "kim", "--existing", stdout=io.StringIO())
    assert get_user_model().objects.get(username="kim").has_perm("workshops.run_workshop")


def test_sandbox_cap_reached_says_so(workshop, sandbox_settings):
    sandbox_settings.LBLAB_LABS_MAX_SANDBOXES = 0  # nothing may start: no process is spawned
    ada = join_as(workshop, "Ada")
    resp = ada.post(f"/workshops/w/{workshop.code}/sandbox")
    assert resp.status_code == 503
    body = resp.json()
    assert body["ok"] is False and "The lab is full: 0 sandboxes are running" in body["error"]
    assert "Try again in about" in body["error"]
    me = ada.get(f"/workshops/w/{workshop.code}/me.json").json()
    assert me["sandbox"]["state"] == "refused" and "Try again in about" in me["sandbox"]["message"]


def test_end_and_stop_controls(workshop, instructor_client, sandbox_settings):
    join_as(workshop, "Ada")
    ada = Participant.objects.get(display_name="Ada")
    base = f"/workshops/{workshop.pk}/control/"
    resp = instructor_client.post(base + "stop-sandbox", {"participant": ada.pk})
    assert resp.json() == {"ok": True, "message": "Ada had no sandbox running."}
    assert instructor_client.post(base + "stop-sandbox", {"participant": 99999}).status_code == 404
    resp = instructor_client.post(base + "end", {})
    assert resp.json()["ok"] and "Stopped 0 sandboxes" in resp.json()["message"]
    assert instructor_client.post(base + "inject-fault", {"backend": "b1", "fault": "slow"}).status_code == 410
    assert instructor_client.post(base + "present-start", {}).status_code == 410
    learner = client()
    assert learner.post("/workshops/join/", {"code": workshop.code,
                                             "display_name": "Late"}).status_code == 410
