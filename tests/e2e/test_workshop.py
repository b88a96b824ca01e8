"""A whole workshop in headless Chromium: an instructor, two learners, their sandboxes.

Real parts on loopback: daphne serving the site (fresh SQLite, migrated, one instructor
made with `manage.py createinstructor`), the instructor's demo sandbox that presenter
mode shows, and each learner's own sandbox started from their page through the sandbox
service. The channel layer is Redis when it answers on 127.0.0.1:6379 (as workshops run
it), else in-memory (one daphne process either way). Three sandboxes at most, all
stopped at the end.
"""
from __future__ import annotations

import csv
import io
import json
import re
import sys
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import FAST_HEALTH, e2e_redis, redis_up
from tests.explainer.parts import free_port, spawn, stop, wait_http

E2E_REDIS = e2e_redis(1)
PASSWORD = "Instructor-pass-2931"


class Site:
    def __init__(self, url: str, state_dir: Path, logs: Path):
        self.url = url
        self.state_dir = state_dir
        self.logs = logs

    def service(self):
        from labs.sandbox import SandboxService
        return SandboxService(state_dir=self.state_dir)


def run(argv: list[str], env: dict, stdin: str | None = None) -> None:
    import os
    import subprocess

    done = subprocess.run(argv, cwd=Path(__file__).resolve().parents[2], input=stdin, text=True,
                          capture_output=True, env={**os.environ, **env}, timeout=120)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from labs.sandbox import SandboxService
    from labs.sandbox.topology import default_config

    base = tmp_path_factory.mktemp("workshop")
    state_dir, logs = base / "state", base / "logs"
    logs.mkdir()
    env = {"LBLAB_STATE_DIR": str(state_dir), "LBLAB_VAR_DIR": str(base / "var"),
           "LBLAB_SANDBOX": "wsdemo", "LBLAB_ADMIN_URL": "", "LBLAB_EMBEDDED_BRIDGE": "1",
           "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "lblab.settings",
           "REDIS_URL": E2E_REDIS if redis_up() else ""}
    svc = SandboxService(state_dir=state_dir)
    config = default_config(["b1", "b2"])
    config["pools"]["web"]["health"] = FAST_HEALTH
    svc.create("wsdemo", backends=["b1", "b2"], config=config, timeout=20)
    daphne = None
    try:
        run([sys.executable, "manage.py", "migrate", "--noinput"], env)
        run([sys.executable, "manage.py", "createinstructor", "ines", "--password-stdin"], env,
            stdin=PASSWORD + "\n")
        port = free_port()
        daphne = spawn([str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p",
                        str(port), "lblab.asgi:application"], logs / "daphne.log", env=env)
        wait_http(f"http://127.0.0.1:{port}/workshops/login/", proc=daphne,
                  log=logs / "daphne.log")
        yield Site(f"http://127.0.0.1:{port}", state_dir, logs)
    finally:
        if daphne is not None:
            stop(daphne)
        for sb in svc.list():
            svc.stop(sb.id, grace=3)


def faults_of(backend_url: str) -> dict:
    with urllib.request.urlopen(f"{backend_url}/_control/faults", timeout=3) as resp:
        return json.load(resp)["faults"]


# A whole workshop is one long walk (three sandboxes, presenter mode, a fault for everyone):
# on a loaded machine it needs more than the suite's default 120 s.
@pytest.mark.timeout(300)
def test_a_workshop_from_login_to_csv(browser, site, artifacts):
    errors: list[str] = []

    def new_page(**kwargs):
        context = browser.new_context(viewport={"width": 1440, "height": 950}, **kwargs)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        return context, page

    # --------------------------------------------------------------- the instructor
    teacher_ctx, teacher = new_page()
    teacher.goto(site.url + "/workshops/")
    expect(teacher).to_have_url(site.url + "/workshops/login/?next=/workshops/")
    teacher.screenshot(path=artifacts / "workshop-login.png")
    teacher.fill("input[name=username]", "ines")
    teacher.fill("input[name=password]", "not the password")
    teacher.click("button[type=submit]")
    expect(teacher.locator(".msg-err")).to_contain_text("do not match")
    teacher.fill("input[name=password]", PASSWORD)
    teacher.click("button[type=submit]")
    expect(teacher).to_have_url(site.url + "/workshops/")
    teacher.fill("input[name=title]", "Load balancing 101 · Tuesday")
    teacher.click("#new-workshop button[type=submit]")
    expect(teacher.locator("#workshop-title")).to_have_text("Load balancing 101 · Tuesday")
    expect(teacher.locator("#feed-status")).to_have_text("live", timeout=10_000)
    expect(teacher.locator("#learner-rows")).to_contain_text("Waiting for learners")
    teacher.screenshot(path=artifacts / "workshop-cockpit-empty.png")
    code = teacher.locator("#join-code").inner_text().strip()
    workshop_id = teacher.url.rstrip("/").rsplit("/", 1)[-1]
    assert len(code) == 6

    # --------------------------------------------------------------- two learners join
    learners = {}
    for name in ("Ada", "Ben"):
        ctx, page = new_page()
        page.goto(f"{site.url}/workshops/join/{code.lower()}/")
        if name == "Ada":
            page.screenshot(path=artifacts / "workshop-join.png")
        page.fill("input[name=display_name]", name)
        page.click("#join-form button[type=submit]")
        expect(page.locator("#hello-h")).to_contain_text(f"Hi {name}")
        expect(page.locator("#feed-status")).to_have_text("live", timeout=10_000)
        learners[name] = (ctx, page)
        # The cockpit counts in words that agree with the number: 1 learner, 2 learners.
        expect(teacher.locator("#n-learners")).to_have_text(str(len(learners)), timeout=10_000)
        expect(teacher.locator("#n-learners + .k")).to_have_text(
            "learner" if len(learners) == 1 else "learners")
    ada, ben = learners["Ada"][1], learners["Ben"][1]

    # The cockpit shows both, live (no reload), online.
    rows = teacher.locator("#learner-rows")
    expect(rows.locator("tr", has_text="Ada")).to_have_count(1, timeout=10_000)
    expect(rows.locator("tr", has_text="Ben")).to_have_count(1)
    expect(teacher.locator("#n-online")).to_have_text("2", timeout=10_000)

    # A learner's activity appears in the cockpit at once: Ben raises his hand.
    ben.click("#hand")
    expect(ben.locator("#hand")).to_have_attribute("aria-pressed", "true")
    ben_row = rows.locator("tr", has_text="Ben")
    expect(ben_row.locator(".hand-badge")).to_have_text("⚑ hand up", timeout=5_000)
    expect(teacher.locator("#activity")).to_contain_text("Ben raised a hand: stuck")
    expect(rows.locator("tr").first).to_contain_text("Ben")  # raised hands first
    expect(teacher.locator("#stuck-callout")).to_contain_text("Stuck longest: Ada")
    expect(teacher.locator("#stuck-callout")).to_contain_text("Asking for help: Ben")
    expect(teacher.locator("#n-hands + .k")).to_have_text("hand raised")

    # Lesson work (the course's own pages) reaches the cockpit live: Ada opens a lesson and
    # answers a check right, Ben answers one wrong.
    lesson = "/course/lessons/what-a-balancer-does/"
    for name, answer in (("Ada", "query"), ("Ben", "spread")):
        ctx = learners[name][0]
        tab = ctx.new_page()
        tab.goto(site.url + lesson)
        token = next(c["value"] for c in ctx.cookies() if c["name"] == "csrftoken")
        resp = tab.request.post(f"{site.url}{lesson}check/not-a-job", form={"answer": answer},
                                headers={"X-CSRFToken": token, "Accept": "application/json",
                                         "Referer": site.url + lesson})
        assert resp.ok, resp.text()
        tab.close()
    ada_row = rows.locator("tr", has_text="Ada")
    expect(ada_row.locator("td.lesson")).to_contain_text("What a load balancer does",
                                                         timeout=10_000)
    expect(ada_row.locator("td.lesson")).to_contain_text(re.compile(r"1 of \d+ checks right"))
    expect(ada_row.locator(".passes")).to_have_text("1")
    expect(rows.locator("tr", has_text="Ben").locator(".fails")).to_have_text("1")
    expect(teacher.locator("#activity")).to_contain_text(
        "Ada answered a check in What a load balancer does: right")
    expect(teacher.locator("#n-passes")).to_have_text("1")
    expect(teacher.locator("#n-passes + .k")).to_have_text("pass")
    # The learner's page links to the course and the labs, and to the lesson they worked on.
    expect(ada.locator(".go-links a", has_text="the course")).to_have_attribute("href", "/course/")
    expect(ada.locator(".go-links a", has_text="the graded labs")).to_have_attribute("href", "/labs/")
    expect(ada.locator("#progress a", has_text="What a load balancer does").first).to_have_attribute(
        "href", "/course/lessons/what-a-balancer-does/", timeout=10_000)

    # Each learner starts their own sandbox.
    for page in (ada, ben):
        page.click("#sandbox-start")
        expect(page.locator("#sandbox-chip")).to_have_text("running", timeout=30_000)
        expect(page.locator("#sandbox-open")).to_be_visible()
    expect(teacher.locator("#n-sandboxes")).to_have_text("2", timeout=10_000)
    expect(teacher.locator("#activity")).to_contain_text("Ada started a sandbox")

    # --------------------------------------------------------------- presenter mode
    with teacher_ctx.expect_page() as opened:
        teacher.click("#present-start")
    presenter = opened.value
    presenter.on("pageerror", lambda exc: errors.append(f"presenter: {exc}"))
    expect(presenter.locator("#present-state")).to_have_text("Presenting to your learners")
    screen = presenter.frame_locator("#screen")
    expect(screen.locator("#topology svg")).to_be_visible(timeout=15_000)

    for page in (ada, ben):
        expect(page.locator("#follow")).to_be_visible(timeout=10_000)
        expect(page.frame_locator("#follow-frame").locator("#topology svg")).to_be_visible(
            timeout=15_000)
    # The instructor switches to the Faults tab: both learners' screens follow.
    screen.locator("#tab-faults").click()
    for page in (ada, ben):
        expect(page.frame_locator("#follow-frame").locator("#tab-faults")).to_have_attribute(
            "aria-selected", "true", timeout=10_000)
    # ...and scrolls down to the decision stream, then points at the log card.
    presenter.frame_locator("#screen").locator("#log-h").scroll_into_view_if_needed()
    screen.locator("#log-h").click()
    for page in (ada, ben):
        expect(page.frame_locator("#follow-frame").locator("section.lbw-spot #log-h")).to_have_count(
            1, timeout=10_000)
        frame = page.locator("#follow-frame").element_handle().content_frame()
        frame.wait_for_function("() => window.scrollY > 100", timeout=10_000)
    presenter.screenshot(path=artifacts / "workshop-presenter.png")
    ada.screenshot(path=artifacts / "workshop-learner-following.png")
    # A learner may leave, and follow again.
    ben.click("#leave")
    expect(ben.locator("#follow")).to_be_hidden()
    expect(ben.locator("#rejoin")).to_be_visible()
    ben.click("#rejoin")
    expect(ben.locator("#follow")).to_be_visible()
    ben.click("#leave")
    presenter.click("#toggle")  # stop presenting
    expect(presenter.locator("#present-state")).to_have_text("Not presenting")
    expect(ada.locator("#follow")).to_be_hidden(timeout=10_000)
    expect(ben.locator("#rejoin")).to_be_hidden()

    # --------------------------------------------------------------- a fault for everyone
    teacher.bring_to_front()
    teacher.select_option("#fault-form select[name=backend]", "b2")
    teacher.select_option("#fault-select", "slow")
    teacher.fill("#fault-form input[name=latency_ms]", "300")
    teacher.click("#inject")
    expect(teacher.locator("#control-result")).to_contain_text(
        "Slow responses on b2: done in 2 of 2 sandboxes", timeout=15_000)
    results = teacher.locator("#fault-result-list li.ok")
    expect(results).to_have_count(2, timeout=10_000)
    expect(rows.locator("tr", has_text="Ada")).to_contain_text("✓ b2: slow responses")
    # Verified at the source: each toy backend's own /_control/faults.
    learner_sandboxes = [sb for sb in site.service().list() if sb.id != "wsdemo"]
    assert len(learner_sandboxes) == 2
    for sb in learner_sandboxes:
        assert faults_of(sb.backends["b2"])["latency_ms"] == 300
        assert faults_of(sb.backends["b1"])["latency_ms"] == 0
    for page in (ada, ben):
        expect(page.locator("#notices")).to_contain_text("Fault injected: b2: slow responses",
                                                         timeout=10_000)
    teacher.wait_for_timeout(600)
    teacher.screenshot(path=artifacts / "workshop-cockpit.png", full_page=True)
    ben.screenshot(path=artifacts / "workshop-learner.png", full_page=True)

    # The instructor opens one learner's work.
    detail = teacher_ctx.new_page()
    detail.goto(site.url + rows.locator("tr", has_text="Ada").locator("a").get_attribute("href"))
    expect(detail.locator("#detail-progress")).to_contain_text("What a load balancer does")
    detail.screenshot(path=artifacts / "workshop-learner-detail.png", full_page=True)
    detail.close()

    # --------------------------------------------------------------- cohort CSV
    with teacher.expect_download() as download:
        teacher.click("#csv")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["display_name"] for r in table) == ["Ada", "Ben"]
    by_name = {r["display_name"]: r for r in table}
    assert by_name["Ben"]["hand_raised"] == "yes" and by_name["Ada"]["hand_raised"] == "no"
    assert all(r["sandbox_state"] == "running" and r["faults_received"] == "1" for r in table)
    assert by_name["Ada"]["current_lesson"] == "What a load balancer does"
    assert by_name["Ada"]["passes"] == "1" and by_name["Ben"]["failures"] == "1"

    # --------------------------------------------------------------- learners see only their own
    ada_detail = ada.evaluate("() => fetch('me.json').then(r => r.json())")
    own_url = f"{site.url}/workshops/{workshop_id}/learners/{ada_detail['me']['id']}/"
    assert ada.request.get(own_url).status == 200
    assert ben.request.get(own_url).status == 403
    assert ben.request.get(f"{site.url}/workshops/{workshop_id}/cockpit.json",
                           max_redirects=0).status == 302
    assert ben.request.get(f"{site.url}/workshops/{workshop_id}/results.csv",
                           max_redirects=0).status == 302
    ben_me = ben.evaluate("() => fetch('me.json').then(r => r.json())")
    assert ben_me["me"]["name"] == "Ben" and "Ada" not in json.dumps(ben_me)
    # A POST without the CSRF token is refused, even with the instructor's session.
    assert teacher.request.post(f"{site.url}/workshops/{workshop_id}/control/end").status == 403

    # --------------------------------------------------------------- end: sandboxes stop
    teacher.once("dialog", lambda dialog: dialog.accept())
    teacher.click("#end-form button[type=submit]")
    expect(teacher.locator("#control-result")).to_contain_text("Stopped 2 sandboxes",
                                                               timeout=20_000)
    expect(teacher.locator("#ended-pill")).to_be_visible(timeout=10_000)
    expect(ada.locator("#ended")).to_be_visible(timeout=10_000)
    # Her page says stopped, and nothing on it still says the sandbox is running.
    expect(ada.locator("#sandbox-chip")).to_have_text("stopped", timeout=10_000)
    expect(ada.locator("#sandbox-result")).not_to_contain_text("running")
    expect(ada.locator("#sandbox-state")).to_contain_text("stopped by your instructor")
    assert [sb.id for sb in site.service().list()] == ["wsdemo"]
    teacher.goto(site.url + "/workshops/")
    expect(teacher.locator("#workshops")).to_contain_text("ended")
    teacher.screenshot(path=artifacts / "workshop-list.png")

    for ctx in (teacher_ctx, *(c for c, _ in learners.values())):
        ctx.close()
    assert errors == []
