"""From a lab result: "What if I had used ...?" - a form, a replay in the background, the
side-by-side table when it is done (real sandboxes, the hand-made 2 s trace)."""
from __future__ import annotations

import re
import time

import pytest

from labs.framework import replay_trace
from labs.models import LabRun
from tests.labs.replay.test_replay_real import N, SLUG, small_trace

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded_run(client, settings, tmp_path):
    settings.LBLAB_LABS_STATE_DIR = str(tmp_path)
    settings.LBLAB_LABS_MAX_SANDBOXES = 6
    client.get("/labs/")  # a session: the anonymous learner
    run_dir = tmp_path / "labruns" / "r1"
    run_dir.mkdir(parents=True)
    replay_trace.dump(small_trace(), run_dir / "trace.jsonl")
    LabRun.objects.create(id="r1", learner=f"s:{client.session.session_key}", slug=SLUG,
                          document="", state="done", passed=False, run_dir=str(run_dir))
    yield run_dir
    from labs.services import sandboxes

    sandboxes.reap(everything=True, override=str(tmp_path))


def test_the_form_offers_every_algorithm_with_the_recorded_one_marked(client, recorded_run):
    page = client.get(f"/labs/{SLUG}/runs/r1/replay").content.decode()
    assert "<legend>Replay this run under" in page
    assert re.search(r'value="round_robin" id="algo-round_robin"\s+checked', page)
    assert "<code>round_robin</code> (what this run used)" in page
    assert re.search(r'value="least_outstanding_requests" id="algo-least_outstanding_requests"'
                     r'\s+checked', page)
    assert '<label for="algo-maglev"><code>maglev</code></label>' in page
    assert client.put(f"/labs/{SLUG}/runs/r1/replay").status_code == 405


def test_a_wrong_choice_is_refused_with_what_to_change(client, recorded_run):
    resp = client.post(f"/labs/{SLUG}/runs/r1/replay", {"algorithm": ["round_robin", "fastest"]})
    assert resp.status_code == 400
    assert "unknown algorithm fastest; choose from" in resp.content.decode()
    resp = client.post(f"/labs/{SLUG}/runs/r1/replay", {})
    assert "name at least one algorithm" in resp.content.decode()
    assert not (recorded_run / "replays").exists() or not list((recorded_run / "replays")
                                                               .iterdir())


def test_someone_elses_run_is_not_found(client, recorded_run):
    LabRun.objects.filter(id="r1").update(learner="s:someone-else")
    assert client.get(f"/labs/{SLUG}/runs/r1/replay").status_code == 404


def test_replay_in_the_background_then_the_table(client, recorded_run):
    resp = client.post(f"/labs/{SLUG}/runs/r1/replay",
                       {"algorithm": ["round_robin", "least_outstanding_requests"]})
    assert resp.status_code == 302
    url = resp["Location"]
    assert re.fullmatch(rf"/labs/{SLUG}/runs/r1/replays/[0-9-]+-[0-9a-f]+", url)
    running = client.get(url).content.decode()
    assert "Replaying under round_robin, least_outstanding_requests" in running
    assert 'role="status"' in running
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        status = client.get(url, {"format": "json"}).json()
        if status["state"] != "running":
            break
        time.sleep(0.5)
    assert status["state"] == "done", status
    page = client.get(url).content.decode()
    assert f"{N} requests over" in page
    row = re.search(r'<th scope="row">least_outstanding_requests</th><td>(\d+)</td>\s*'
                    r'<td>(\d+)</td>', page)
    assert row and row.groups() == (str(N), "0")
    assert "least_outstanding_requests picked" in page and "round_robin picked" in page
    assert "Not replayed at 1.0 s: b2: process crashed" in page
    assert client.get(f"/labs/{SLUG}/runs/r1/replays/nope").status_code == 404
