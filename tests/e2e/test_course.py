"""The course in headless Chromium against a real site and a real learner sandbox.

daphne serves the site from its own SQLite and state directory; the learner's sandbox
(one proxy, four toy backends) is started by the site itself when the lesson's "see it
live" button is pressed, and the prediction runs in that same sandbox.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.explainer.parts import REPO, free_port, spawn, stop, wait_http


def drill_count() -> int:
    """How many drills the course has: the page counts from the content, so does the test."""
    import yaml
    files = sorted((REPO / "explainer" / "course" / "content" / "drills").glob("*.yaml"))
    return sum(len(yaml.safe_load(f.read_text(encoding="utf-8"))["drills"]) for f in files)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("course-e2e")
    state, logs = base / "state", base / "logs"
    logs.mkdir()
    env = {"DEBUG": "1", "LBLAB_VAR_DIR": str(base / "var"), "LBLAB_STATE_DIR": str(state),
           "LBLAB_ADMIN_URL": "", "REDIS_URL": "", "LBLAB_EMBEDDED_BRIDGE": "1",
           "DJANGO_SETTINGS_MODULE": "lblab.settings"}
    import os
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=REPO,
                   env={**os.environ, **env}, check=True)
    port = free_port()
    daphne = spawn([str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p",
                    str(port), "lblab.asgi:application"], logs / "daphne.log", env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/course/", proc=daphne, log=logs / "daphne.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(daphne)
        from labs.sandbox import SandboxService

        svc = SandboxService(state_dir=state)
        for sb in svc.list():  # the learner's sandbox, started by the site
            svc.stop(sb.id, grace=2)


def test_every_lesson_diagram_renders_in_strict_mermaid(page: Page, site):
    from explainer.course import content, markdown, selectors

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    for lesson in content.load().lessons:
        blocks = markdown.render(lesson.body, lambda n, l=lesson: selectors.diagram_source(n, l))
        page.goto(f"{site}/course/lessons/{lesson.slug}/")
        # every block of the prose, plus the preset's topology in the live panel
        expect(page.locator(".mermaid-out svg")).to_have_count(len(blocks.mermaid_blocks) + 1,
                                                               timeout=15_000)
        assert page.locator(".diagram-error").count() == 0, lesson.slug
    assert errors == []


def test_course_walk(page: Page, site, artifacts):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # The map: twelve lessons, nothing done yet.
    page.goto(f"{site}/course/")
    expect(page.locator(".lesson-card")).to_have_count(12)
    expect(page.locator(".ring")).to_contain_text("0")

    # A lesson: its generated diagram (the proxy's own transition table) renders as SVG.
    page.locator(".lesson-card a", has_text="Health checks").click()
    expect(page).to_have_url(re.compile(r"/course/lessons/health-checks/$"))
    table = page.locator('figure[data-diagram="health_table"] svg')
    expect(table).to_be_visible(timeout=15_000)
    expect(table).to_contain_text("unhealthy_threshold failures")

    # Check questions, answered in place and graded on the server.
    window = page.locator("#check-window")
    window.locator('input[name="answer"]').fill("30")
    window.get_by_role("button", name="Check").click()
    expect(window.locator(".verdict")).to_have_text("Right.")
    expect(window.locator(".explanation")).to_contain_text("interval × threshold = 30 s")
    flap = page.locator("#check-flap")
    flap.get_by_text("Dead backends are detected more slowly").click()
    flap.get_by_role("button", name="Check").click()
    expect(flap.locator(".verdict")).to_have_text("Not quite.")
    expect(flap.locator(".choice-note")).to_contain_text("They are detected faster")
    expect(page.locator("#checks-solved")).to_have_text("1")
    flap.scroll_into_view_if_needed()
    page.locator("#checks").screenshot(path=artifacts / "course-checks.png")

    # See it live: the site starts this learner's sandbox and applies the preset.
    page.locator("#live-setup").click()
    expect(page.locator("#live-status")).to_have_class(re.compile(r"\bok\b"), timeout=30_000)
    expect(page.locator("#live-status")).to_contain_text("presets/health-window.yaml")
    expect(page.locator("#live-topology svg")).to_contain_text("healthy", timeout=15_000)
    page.locator("#live-send").click()
    expect(page.locator("#live-status")).to_contain_text("12× 200", timeout=15_000)
    rows = page.locator("#live-decisions tbody tr")
    expect(rows).to_have_count(12, timeout=10_000)
    expect(rows.first).to_contain_text("index=")
    dashboard = page.locator("#live-dashboard").get_attribute("href")
    assert re.fullmatch(r"/lab/lab-[0-9a-f]{12}/", dashboard)
    page.locator("#live").screenshot(path=artifacts / "course-live.png")
    page.screenshot(path=artifacts / "course-lesson.png", full_page=True)

    # An interview drill: write, reveal, grade yourself.
    page.goto(f"{site}/course/drills/?level=mid")
    page.locator(".drill-row a", has_text="Health checks every 10 s").click()
    page.locator("#answer").fill("Up to about 35 s: three failed probes at 10, 20 and 30 s, "
                                 "each waiting for the 5 s timeout. Users on it time out.")
    page.get_by_role("button", name="Save my answer and reveal the model").click()
    expect(page.locator("#model")).to_contain_text("35 s")
    points = page.locator("#drill-grade-form input[type=checkbox]")
    total = points.count()
    points.nth(0).check()
    points.nth(1).check()
    page.get_by_role("button", name="Save my grade").click()
    expect(page.locator(".score-big")).to_have_text(f"{round(100 * 2 / total)}%")
    page.screenshot(path=artifacts / "course-drill.png", full_page=True)

    # Predict, then observe: the same sandbox runs it for real.
    page.goto(f"{site}/course/predict/")
    page.locator(".exercise-cards a", has_text="Round robin around a backend").click()
    for i, backend in enumerate(["b1", "b2", "b4", "b1", "b2", "b3"], 1):
        page.locator(f'select[name="order_{i}"]').select_option(backend)
    page.get_by_role("button", name="Lock in my prediction and run it").click()
    expect(page).to_have_url(re.compile(r"\?run=\d+#result$"), timeout=30_000)
    expect(page.locator("#run-score")).to_have_text("83%")  # 5 of 6 positions
    evidence = page.locator("table.evidence tbody tr")
    expect(evidence).to_have_count(6)
    expect(evidence.nth(2)).to_contain_text("b4")
    expect(evidence.nth(2)).to_contain_text("index=2 · of=3")
    expect(page.locator(".evidence-diagram svg")).to_contain_text("backend b4", timeout=15_000)
    page.locator("#result").screenshot(path=artifacts / "course-predict.png")

    # Back on the map: the progress shows.
    page.goto(f"{site}/course/")
    card = page.locator('.lesson-card[data-lesson="health-checks"]')
    expect(card).to_contain_text("in progress")
    expect(card.locator(".meter > span")).to_have_attribute("style", "width: 25%")
    expect(page.locator("#drills-h + .hint")).to_contain_text(f"1 of {drill_count()} self-graded")
    expect(page.locator(".predict-mini")).to_contain_text("best 83%")
    expect(page.locator(".hero .button")).to_contain_text("Continue: Health checks")
    page.screenshot(path=artifacts / "course-map.png", full_page=True)
    assert errors == []
