"""The lab pages: editor validation in place, a real run in the background, polling,
the result, reports, the fix on request, progress per learner."""
from __future__ import annotations

import gzip
import json
import time

import pytest
from django.test import Client

from labs.framework import registry
from labs.models import LabProgress, LabRun
from tests.labs.labs.conftest import RECORDINGS

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab_site(settings, tmp_path):
    settings.LBLAB_LABS_STATE_DIR = str(tmp_path)
    settings.LBLAB_LABS_MAX_SANDBOXES = 4
    yield tmp_path
    from labs.services import sandboxes

    sandboxes.reap(everything=True, override=str(tmp_path))


def test_list_and_page(client, lab_site):
    page = client.get("/labs/")
    assert page.status_code == 200
    for lab in registry.all_labs():
        assert lab.title.replace("'", "&#x27;") in page.content.decode()
    lab = client.get("/labs/health-check-window/")
    body = lab.content.decode()
    assert lab.status_code == 200 and "Time scale <strong>1:10</strong>" in body
    assert "unhealthy_threshold: 3" in body  # the starting config is in the editor
    assert client.get("/labs/no-such-lab/").status_code == 404


def test_validation_errors_come_with_their_paths(client, lab_site):
    text = registry.get("lying-health-check").topology_text().replace("timeout: 200ms",
                                                                       "timeout: 200")
    resp = client.post("/labs/lying-health-check/validate", {"document": text})
    data = resp.json()
    assert resp.status_code == 200 and data["ok"] is False
    assert data["errors"] == [{"path": "pools.web.health.timeout",
                               "message": "a duration needs a unit: write e.g. '200s' or '200ms', "
                                          "not 200"}]
    resp = client.post("/labs/lying-health-check/runs", {"document": text})
    assert resp.status_code == 400 and resp.json()["errors"][0]["path"] == "pools.web.health.timeout"
    assert not LabRun.objects.exists()


def poll(client, url, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = client.get(url).json()
        if st["state"] != "running":
            return st
        time.sleep(0.5)
    raise AssertionError(f"run did not finish: {st}")


@pytest.mark.timeout(240)
def test_a_real_run_from_the_page(client, lab_site):
    lab = registry.get("lying-health-check")
    resp = client.post("/labs/lying-health-check/runs", {"document": lab.topology_text()})
    assert resp.status_code == 202, resp.content
    run_id = resp.json()["run_id"]
    again = client.post("/labs/lying-health-check/runs", {"document": lab.topology_text()})
    assert again.status_code == 409  # one run at a time per learner
    status = poll(client, resp.json()["status_url"])
    assert status["state"] == "done", status
    result = status["result"]
    assert result["passed"] is False
    assert "target is at most 15" in " ".join(result["result"]["evidence"])
    assert result["result"]["chart"]["series"] and result["result"]["diagrams"]
    assert result["failed_requests"] and result["sandbox"]["start_seconds"]
    run = LabRun.objects.get(pk=run_id)
    assert run.state == "done" and run.passed is False
    progress = LabProgress.objects.get(slug="lying-health-check")
    assert progress.attempts == 1 and not progress.passed
    assert progress.last_document == lab.topology_text()
    # The learner's sandbox stays up for the dashboard, under the learner's own id.
    from labs.services import sandboxes

    assert [sb.id for sb in sandboxes.service().list()] == [run.sandbox_id]
    html = client.get(f"/labs/lying-health-check/runs/{run_id}/report.html")
    assert html.status_code == 200 and b"FAIL" in b"".join(html.streaming_content)
    js = client.get(f"/labs/lying-health-check/runs/{run_id}/report.json")
    assert "attachment" in js["Content-Disposition"]
    assert json.loads(b"".join(js.streaming_content))["document"]["pools"]["web"]
    rid = result["failed_requests"][0]["request_id"]
    trace = client.get(f"/labs/lying-health-check/runs/{run_id}/requests/{rid}").json()
    assert trace["mermaid"].startswith("sequenceDiagram") and trace["event"]["request_id"] == rid
    # Another learner sees none of it.
    other = Client()
    assert other.get(f"/labs/lying-health-check/runs/{run_id}/status").status_code == 404
    assert other.get(f"/labs/lying-health-check/runs/{run_id}/report.html").status_code == 404


def test_the_fix_is_shown_on_request_only(client, lab_site):
    page = client.get("/labs/drain-cuts-uploads/").content.decode()
    assert "deregistration_delay: 2s" not in page
    data = client.post("/labs/drain-cuts-uploads/solution").json()
    assert "deregistration_delay: 2s" in data["yaml"] and "longest request" in data["why"]
    assert LabProgress.objects.get(slug="drain-cuts-uploads").solution_revealed


def test_answers_regrade_a_recorded_run_and_save_progress(client, lab_site):
    client.get("/labs/")  # a session: the anonymous learner
    learner = f"s:{client.session.session_key}"
    run_dir = lab_site / "labruns" / "r1"
    run_dir.mkdir(parents=True)
    with gzip.open(RECORDINGS / "502-503-504--start.json.gz", "rt") as fh:
        (run_dir / "recording.json").write_text(fh.read())
    (run_dir / "result.json").write_text(json.dumps({"run_id": "r1", "label": "start"}))
    (run_dir / "document.yaml").write_text(registry.get("502-503-504").topology_text())
    LabRun.objects.create(id="r1", learner=learner, slug="502-503-504", document="",
                          state="done", passed=False, run_dir=str(run_dir))
    wrong = {"A": {"status": 503, "cause": "no-backend", "backend": "none"}}
    resp = client.post("/labs/502-503-504/runs/r1/answers", json.dumps({"answers": wrong}),
                       content_type="application/json")
    assert resp.json()["result"]["passed"] is False
    # Which answers are wrong and where to look; the right ones appear nowhere.
    sent = resp.content.decode()
    assert "status and cause and backend wrong" in sent and "termination code" in sent
    for truth in ("backend-closed", "response-timeout", "the events say", "truth"):
        assert truth not in sent
    assert not LabProgress.objects.filter(learner=learner, slug="502-503-504", passed=True).exists()
    right = {"A": {"status": 502, "cause": "backend-closed", "backend": "b1"},
             "B": {"status": 503, "cause": "no-backend", "backend": "none"},
             "C": {"status": 504, "cause": "response-timeout", "backend": "b2"}}
    resp = client.post("/labs/502-503-504/runs/r1/answers", json.dumps({"answers": right}),
                       content_type="application/json")
    assert resp.json()["result"]["passed"] is True
    progress = LabProgress.objects.get(learner=learner, slug="502-503-504")
    assert progress.passed and not progress.passed_after_reveal
    assert "✓" in client.get("/labs/").content.decode()
    bad = client.post("/labs/502-503-504/runs/r1/answers",
                      json.dumps({"answers": {"A": {"status": 200}}}),
                      content_type="application/json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "lab.answers.A.status"
    garbled = client.post("/labs/502-503-504/runs/r1/answers", "{not json",
                          content_type="application/json")
    assert garbled.status_code == 400
    assert garbled.json()["errors"][0]["path"] == "answers"
    assert garbled.json()["error"].startswith("the answers are not valid JSON/YAML")


def test_a_pass_after_showing_the_fix_is_recorded_as_such(client, lab_site):
    from explainer.workshops.progress import lab_item

    client.get("/labs/")
    learner = f"s:{client.session.session_key}"
    run_dir = lab_site / "labruns" / "r2"
    run_dir.mkdir(parents=True)
    with gzip.open(RECORDINGS / "502-503-504--start.json.gz", "rt") as fh:
        (run_dir / "recording.json").write_text(fh.read())
    (run_dir / "result.json").write_text(json.dumps({"run_id": "r2", "label": "start"}))
    (run_dir / "document.yaml").write_text(registry.get("502-503-504").topology_text())
    LabRun.objects.create(id="r2", learner=learner, slug="502-503-504", document="",
                          state="done", passed=False, run_dir=str(run_dir))
    shown = client.post("/labs/502-503-504/solution").json()
    assert "<strong>A: 502 <code>backend-closed</code> on b1.</strong>" in shown["why_html"]
    assert "<ul>" in shown["why_html"] and "**" not in shown["why_html"]  # Markdown rendered
    progress = LabProgress.objects.get(learner=learner, slug="502-503-504")
    assert progress.solution_revealed and progress.revealed_at is not None
    assert "fix shown" in client.get("/labs/").content.decode()
    right = {"A": {"status": 502, "cause": "backend-closed", "backend": "b1"},
             "B": {"status": 503, "cause": "no-backend", "backend": "none"},
             "C": {"status": 504, "cause": "response-timeout", "backend": "b2"}}
    resp = client.post("/labs/502-503-504/runs/r2/answers", json.dumps({"answers": right}),
                       content_type="application/json")
    assert resp.json()["result"]["passed"] is True
    progress.refresh_from_db()
    assert progress.passed and progress.passed_after_reveal
    page = client.get("/labs/502-503-504/").content.decode()
    assert "passed after showing the fix" in page
    assert "passed after showing the fix" in client.get("/labs/").content.decode()
    # The workshop cockpit's data source says so too.
    item = lab_item(progress, LabRun.objects.get(id="r2"))
    assert item.passed is True and item.step.startswith("passed after showing the fix")


def test_the_tracing_lab_lists_its_cause_words_next_to_the_form(client, lab_site):
    page = client.get("/labs/502-503-504/").content.decode()
    form = page.index('id="answers"')
    words = page.index('class="cause-words"')
    assert 0 < form < words
    for code in registry.get("502-503-504").spec.answer.fields["cause"]:
        assert f"<dt><code>{code}</code>" in page
    assert "The backend closed or reset the connection" in page


def test_the_list_says_duration_difficulty_and_time_scale(client, lab_site):
    page = client.get("/labs/").content.decode()
    assert 'one second in the lab stands for ten seconds in' in page
    for lab in registry.all_labs():
        assert lab.spec.difficulty in ("introductory", "intermediate", "advanced")
    assert page.count('class="difficulty"') == len(registry.all_labs())
    assert "about 20 min" in page and "each run about 12 s" in page
    assert "1 lab second = 10 s in production" in page


def test_the_list_filters_by_concept_without_javascript(client, lab_site):
    page = client.get("/labs/").content.decode()
    # A GET form: a labelled select and a submit button, no script needed.
    assert '<form class="lab-filter" method="get"' in page
    assert '<label for="concept-filter">Concept</label>' in page
    assert 'name="concept"' in page and '<button type="submit">' in page
    total = len(registry.all_labs())
    assert page.count('class="lab-item') == total
    assert f"Showing all {total} labs." in page
    page = client.get("/labs/?concept=l4-vs-l7").content.decode()
    about = [lab for lab in registry.all_labs() if "l4-vs-l7" in lab.spec.concepts]
    assert {lab.slug for lab in about} >= {"l4-path-routing", "grpc-l4-pinning"}
    assert page.count('class="lab-item') == len(about)
    assert "gRPC behind a layer 4 balancer" in page and "The health-check window" not in page
    assert f"Showing {len(about)} of {total} labs about <strong>Layer 4 vs layer 7</strong>" in page
    assert '<option value="l4-vs-l7" selected>' in page
    assert '<a href="?concept=l4-vs-l7" aria-current="true">' in page  # the tags filter too
    # An unknown concept says so and shows everything (the learner is not left empty).
    page = client.get("/labs/?concept=telepathy").content.decode()
    assert "There is no concept called “telepathy”" in page
    assert page.count('class="lab-item') == total


@pytest.mark.parametrize("slug", ["grpc-l4-pinning", "mixed-durations", "outlier-black-hole",
                                  "udp-game-flows"])
def test_the_new_labs_pages_render_their_start(client, lab_site, slug):
    lab = registry.get(slug)
    page = client.get(f"/labs/{slug}/").content.decode()
    assert lab.title in page.replace("&#x27;", "'")
    first_line = lab.topology_text().splitlines()[1]
    assert first_line.split(":")[0] in page  # the starting config is in the editor
    resp = client.post(f"/labs/{slug}/validate", {"document": lab.solution_text()})
    assert resp.status_code == 200 and resp.json()["ok"], resp.json()
