"""The pages and their forms, through Django's test client (CSRF enforced)."""
import pytest
from django.test import Client

from explainer.course.content import catalog
from explainer.course.models import DrillAttempt, PredictionRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    return Client(enforce_csrf_checks=True)


def token(client, url):
    resp = client.get(url)
    assert resp.status_code == 200
    return resp.cookies["csrftoken"].value


def test_map_lists_every_lesson(client):
    resp = client.get("/course/")
    assert resp.status_code == 200
    body = resp.content.decode()
    for lesson in catalog().lessons:
        assert f"/course/lessons/{lesson.slug}/" in body
    assert "Interview drills" in body and "Predict, then observe" in body


def test_lesson_page_has_diagrams_live_panel_and_checks(client):
    resp = client.get("/course/lessons/health-checks/")
    body = resp.content.decode()
    assert resp.status_code == 200
    assert body.count('class="mermaid"') >= 3  # two generated + the preset topology
    assert 'data-diagram="health_table"' in body
    assert 'id="live"' in body and "/course/lessons/health-checks/live" in body
    assert body.count('class="check') >= 4
    assert "/labs/health-check-window/" in body
    assert client.get("/course/lessons/nope/").status_code == 404


def test_check_answer_json_and_form_fallback(client):
    csrf = token(client, "/course/lessons/health-checks/")
    resp = client.post("/course/lessons/health-checks/check/window", {"answer": "30"},
                       HTTP_ACCEPT="application/json", HTTP_X_CSRFTOKEN=csrf)
    data = resp.json()
    assert resp.status_code == 200 and data["correct"] and data["checks_correct"] == 1
    assert "<strong>interval × threshold = 30 s</strong>" in data["explanation_html"]
    resp = client.post("/course/lessons/health-checks/check/flap",
                       {"answer": "slow", "csrfmiddlewaretoken": csrf})
    assert resp.status_code == 302 and resp["Location"].endswith("#check-flap")
    page = client.get("/course/lessons/health-checks/").content.decode()
    assert "Not quite." in page and "Right." in page
    resp = client.post("/course/lessons/health-checks/check/window", {"answer": ""},
                       HTTP_ACCEPT="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert resp.status_code == 400 and resp.json()["error"] == "type one number"
    assert resp.json()["errors"] == [{"path": "", "message": "type one number"}]  # a Problem


def test_posts_without_csrf_are_refused(client):
    client.get("/course/lessons/health-checks/")
    resp = client.post("/course/lessons/health-checks/check/window", {"answer": "30"})
    assert resp.status_code == 403
    assert client.post("/course/drills/black-hole/answer", {"answer": "x" * 40}).status_code == 403


def test_drill_flow(client):
    csrf = token(client, "/course/drills/black-hole/")
    resp = client.post("/course/drills/black-hole/answer",
                       {"answer": "It fails fast so nothing is in flight there.",
                        "csrfmiddlewaretoken": csrf})
    assert resp.status_code == 302
    page = client.get("/course/drills/black-hole/").content.decode()
    assert "Model answer" in page and "Grade yourself" in page
    attempt = DrillAttempt.objects.get()
    resp = client.post("/course/drills/black-hole/grade",
                       {"attempt": attempt.pk, "points": ["zero", "outlier"],
                        "csrfmiddlewaretoken": csrf})
    assert resp.status_code == 302
    attempt.refresh_from_db()
    assert attempt.points == ["zero", "outlier"] and 0 < attempt.score < 1
    assert f"{round(100 * attempt.score)}%" in client.get("/course/drills/black-hole/").content.decode()
    listing = client.get("/course/drills/?level=mid").content.decode()
    assert "black-hole" in listing and "junior" not in listing.split('class="drill-list"')[1]
    assert client.get("/course/drills/?level=wizard").status_code == 404


def test_prediction_form_is_checked_before_anything_runs(client):
    csrf = token(client, "/course/predict/rr-maintenance/")
    resp = client.post("/course/predict/rr-maintenance/run",
                       {"order_1": "b1", "order_2": "b9", "csrfmiddlewaretoken": csrf})
    assert resp.status_code == 400
    assert "Check your prediction" in resp.content.decode()
    assert PredictionRun.objects.count() == 0


def test_live_views_without_a_sandbox(client, tmp_path, settings, monkeypatch):
    monkeypatch.setenv("LBLAB_STATE_DIR", str(tmp_path))
    settings.LBLAB_LABS_STATE_DIR = str(tmp_path)
    assert client.get("/course/lessons/health-checks/live/recent").json()["running"] is False
    csrf = token(client, "/course/lessons/health-checks/")
    resp = client.post("/course/lessons/health-checks/live/send", HTTP_X_CSRFTOKEN=csrf,
                       HTTP_ACCEPT="application/json")
    assert resp.status_code == 409 and "not running" in resp.json()["error"]


def test_every_lesson_links_a_graded_lab_and_the_map_counts_them(client):
    """Issue 15: every lesson links at least one lab. The map's summary and each card
    count only labs that exist (a lesson without one is covered by labs_summary below)."""
    from labs.framework import registry

    known = {lab.slug for lab in registry.all_labs()}
    lessons = catalog().lessons
    missing = [x.slug for x in lessons if not set(x.labs) & known]
    assert not missing, f"lessons without a graded lab: {missing}"
    labs = {slug for x in lessons for slug in x.labs if slug in known}
    body = client.get("/course/").content.decode()
    assert f"each also with a graded lab ({len(labs)} labs in all)" in body
    for lesson in lessons:
        card = body.split(f'data-lesson="{lesson.slug}"', 1)[1].split("</li>", 1)[0]
        n = len(set(lesson.labs) & known)
        assert f"{n} graded lab{'s' if n > 1 else ''}" in card
        assert "no graded lab" not in card


def test_labs_summary_counts_from_the_rows():
    from explainer.course.selectors import labs_summary

    assert labs_summary([{"labs": []}, {"labs": []}]) == "no graded lab yet"
    assert labs_summary([{"labs": ["a"]}, {"labs": ["a", "b"]}]) == (
        "each also with a graded lab (2 labs in all)")
    assert labs_summary([{"labs": ["a"]}, {"labs": []}]) == (
        "1 of them also with a graded lab (1 lab in all)")
