"""Every kind of page passes axe-core's WCAG 2.1 A and AA rules with no serious or critical issue.

axe-core is vendored (static/vendor/axe-core-*/axe.min.js, pinned, from the npm registry) and
injected into each page by Playwright after the page has drawn what it draws: the dashboard's
Mermaid topology, decision stream and "Why this backend?" panel filled by real requests through
a real proxy; a lesson's diagrams; the workshop cockpit and a learner's page with a live feed.
One daphne serves the site (its own SQLite, an instructor made with `manage.py
createinstructor`) beside one sandbox that "/" shows, as `manage.py lab` runs it.

A failure lists each rule with the elements it flagged, so the page (never this test) is fixed.
"""
from __future__ import annotations

import re
import sys
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import FAST_HEALTH
from tests.e2e.test_workshop import PASSWORD, run
from tests.explainer.parts import REPO, free_port, spawn, stop, wait_http

AXE = REPO / "static" / "vendor" / "axe-core-4.14.1" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}
SANDBOX = "a11y"


class Site:
    def __init__(self, url: str, proxy_url: str):
        self.url = url
        self.proxy_url = proxy_url


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from labs.sandbox import SandboxService
    from labs.sandbox.topology import default_config

    base = tmp_path_factory.mktemp("a11y")
    state_dir, logs = base / "state", base / "logs"
    logs.mkdir()
    env = {"LBLAB_STATE_DIR": str(state_dir), "LBLAB_VAR_DIR": str(base / "var"),
           "LBLAB_SANDBOX": SANDBOX, "LBLAB_ADMIN_URL": "", "LBLAB_EMBEDDED_BRIDGE": "1",
           "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "lblab.settings", "REDIS_URL": ""}
    svc = SandboxService(state_dir=state_dir)
    config = default_config(["b1", "b2", "b3"])
    config["pools"]["web"]["health"] = FAST_HEALTH
    sandbox = svc.create(SANDBOX, backends=["b1", "b2", "b3"], config=config, timeout=20)
    daphne = None
    try:
        run([sys.executable, "manage.py", "migrate", "--noinput"], env)
        run([sys.executable, "manage.py", "createinstructor", "ines", "--password-stdin"], env,
            stdin=PASSWORD + "\n")
        port = free_port()
        daphne = spawn([str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p",
                        str(port), "lblab.asgi:application"], logs / "daphne.log", env=env)
        wait_http(f"http://127.0.0.1:{port}/course/", proc=daphne, log=logs / "daphne.log")
        yield Site(f"http://127.0.0.1:{port}", sandbox.proxy_url)
    finally:
        if daphne is not None:
            stop(daphne)
        for sb in svc.list():
            svc.stop(sb.id, grace=3)


def axe_violations(page: Page) -> list[str]:
    """Serious and critical WCAG 2.1 A/AA violations on the page as it is now, one line each."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        WCAG_TAGS)
    lines = []
    for v in result["violations"]:
        if v["impact"] not in BLOCKING:
            continue
        for node in v["nodes"][:5]:
            lines.append(f"{v['id']} ({v['impact']}): {v['help']} at {node['target']}: "
                         f"{node['html'][:160]}")
        if len(v["nodes"]) > 5:
            lines.append(f"{v['id']}: and {len(v['nodes']) - 5} more elements")
    return lines


def assert_accessible(page: Page, name: str, failures: dict) -> None:
    """Record the page's violations under `name`, leaving out ones already recorded."""
    seen = {line for lines in failures.values() for line in lines}
    found = [line for line in axe_violations(page) if line not in seen]
    if found:
        failures[name] = found


def report(failures: dict) -> str:
    return "\n".join(f"{name}:\n  " + "\n  ".join(lines) for name, lines in failures.items())


def first(kind: str) -> str:
    from explainer.course import content

    loaded = content.load()
    return {"lesson": lambda: next(l.slug for l in loaded.lessons if "health" in l.slug),
            "drill": lambda: loaded.drills[0].slug,
            "predict": lambda: loaded.exercises[0].slug}[kind]()


def send(proxy_url: str, n: int) -> None:
    for i in range(n):
        req = urllib.request.Request(f"{proxy_url}/a11y/{i}", headers={"X-Request-Id": f"a11y-{i}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()


# About fifteen axe runs (each a whole-page audit): more than the suite's default 120 s on a
# loaded machine.
@pytest.mark.timeout(300)
def test_the_dashboard_course_and_labs_pass_axe(page: Page, site):
    failures: dict[str, list[str]] = {}
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))

    # The dashboard with everything drawn: topology, stream rows, the why panel, its diagram.
    page.goto(site.url + "/")
    expect(page.locator("#topology svg")).to_contain_text("b3 · healthy", timeout=15_000)
    expect(page.locator("#feed-status")).to_contain_text("live", timeout=10_000)
    send(site.proxy_url, 6)
    expect(page.locator("#stream li")).to_have_count(6, timeout=10_000)
    page.locator("#stream li").first.click()
    expect(page.locator("#request-diagram svg")).to_be_visible(timeout=10_000)
    expect(page.locator("#topology svg")).to_have_attribute(
        "aria-label", re.compile(r"^Topology\. pool web \(round_robin\): b1 healthy"))
    expect(page.locator("#request-diagram svg")).to_have_attribute(
        "aria-label", re.compile(r"^Sequence diagram: The request's path\. Shows "))
    assert_accessible(page, "dashboard", failures)
    for tab in ("backends", "health", "faults", "traffic", "listeners"):
        page.locator(f"#tab-{tab}").click()
        assert_accessible(page, f"dashboard, {tab} tab", failures)

    page.goto(site.url + "/labs/")
    expect(page.locator(".lab-list li").first).to_be_visible()
    assert_accessible(page, "labs list", failures)
    page.goto(site.url + "/labs/health-check-window/")
    expect(page.locator("#document")).to_be_visible()
    assert_accessible(page, "lab page", failures)

    page.goto(site.url + "/course/")
    assert_accessible(page, "course map", failures)
    page.goto(f"{site.url}/course/lessons/{first('lesson')}/")
    expect(page.locator(".mermaid-out svg").first).to_be_visible(timeout=15_000)
    assert_accessible(page, "lesson", failures)
    # Each diagram's text alternative says what kind of diagram it is, what it is about (its
    # caption or section) and what it draws, rather than only "image".
    names = page.eval_on_selector_all(".mermaid-out svg", "ns => ns.map(n => n.getAttribute('aria-label'))")
    assert names and all(n and ": " in n and ". Shows " in n for n in names), names
    page.goto(site.url + "/course/drills/")
    assert_accessible(page, "drills", failures)
    page.goto(f"{site.url}/course/drills/{first('drill')}/")
    assert_accessible(page, "a drill", failures)
    page.goto(site.url + "/course/predict/")
    assert_accessible(page, "predict list", failures)
    page.goto(f"{site.url}/course/predict/{first('predict')}/")
    assert_accessible(page, "predict exercise", failures)
    page.goto(site.url + "/errors/")
    assert_accessible(page, "error contract", failures)

    assert not failures, "axe-core (WCAG 2.1 A/AA) found serious or critical issues:\n" + report(failures)
    assert errors == []


@pytest.mark.timeout(240)
def test_workshop_pages_pass_axe(browser, site):
    failures: dict[str, list[str]] = {}
    teacher_ctx = browser.new_context(viewport={"width": 1440, "height": 950})
    learner_ctx = browser.new_context(viewport={"width": 1440, "height": 950})
    try:
        teacher = teacher_ctx.new_page()
        teacher.goto(site.url + "/workshops/login/")
        assert_accessible(teacher, "instructor login", failures)
        teacher.fill("input[name=username]", "ines")
        teacher.fill("input[name=password]", PASSWORD)
        teacher.click("button[type=submit]")
        expect(teacher).to_have_url(site.url + "/workshops/")
        assert_accessible(teacher, "workshop list", failures)
        teacher.fill("input[name=title]", "Accessible workshop")
        teacher.click("#new-workshop button[type=submit]")
        expect(teacher.locator("#feed-status")).to_have_text("live", timeout=10_000)
        code = teacher.locator("#join-code").inner_text().strip()

        learner = learner_ctx.new_page()
        learner.goto(f"{site.url}/workshops/join/{code}/")
        assert_accessible(learner, "join", failures)
        learner.fill("input[name=display_name]", "Ada")
        learner.click("#join-form button[type=submit]")
        expect(learner.locator("#feed-status")).to_have_text("live", timeout=10_000)
        assert_accessible(learner, "learner page", failures)

        expect(teacher.locator("#learner-rows tr", has_text="Ada")).to_have_count(1, timeout=10_000)
        assert_accessible(teacher, "cockpit", failures)
    finally:
        teacher_ctx.close()
        learner_ctx.close()
    assert not failures, "axe-core (WCAG 2.1 A/AA) found serious or critical issues:\n" + report(failures)


@pytest.mark.timeout(300)
def test_a_lab_page_with_its_result_passes_axe(page: Page, site):
    """A run's result draws a chart, Mermaid diagrams and evidence: all of it is checked."""
    failures: dict[str, list[str]] = {}
    page.goto(site.url + "/labs/lying-health-check/")
    page.locator("#run").click()
    expect(page.locator("#result .verdict")).to_have_text("FAIL", timeout=180_000)
    expect(page.locator("#result .diagrams svg").first).to_be_visible(timeout=15_000)
    assert_accessible(page, "lab page with a result", failures)
    assert not failures, "axe-core (WCAG 2.1 A/AA) found serious or critical issues:\n" + report(failures)
