"""The guided failure labs in headless Chromium against a real site and a real lab run.

daphne serves the site (test_course's ``site`` fixture: its own SQLite and state
directory); each Run press starts ``manage.py labs run`` in the background, which starts
this learner's sandbox (one proxy, four toy backends) in that state directory and sends
real locust traffic. The fixture's teardown stops every sandbox in it.

The lab walked is "The lying health check": 6 s of traffic at 1:10 and a one-line fix,
so it is among the quickest and its verdicts do not depend on timing.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.test_course import site  # noqa: F401  (the fixture: daphne + state dir)

SLUG = "lying-health-check"
N_LABS = len(list((Path(__file__).resolve().parents[2] / "labs" / "catalog")
                   .glob("*/lab.yaml")))
RUN_TIMEOUT = 90_000  # ms: one run is ~10 s on an idle machine


def _verdict_after_run(page: Page, expected: str) -> None:
    page.locator("#run").click()
    expect(page.locator("#progress")).to_be_visible(timeout=10_000)
    expect(page.locator("#result .verdict")).to_have_text(expected, timeout=RUN_TIMEOUT)
    expect(page.locator("#run")).to_be_enabled()


def _reports(page: Page, base: str, passed: bool) -> None:
    """The HTML and JSON reports of the run shown: content types, downloads, one verdict."""
    links = page.locator("#result .reports a")
    expect(links).to_have_count(3)
    html_url, html_dl_url, json_url = (base + links.nth(i).get_attribute("href") for i in range(3))
    word = "PASS" if passed else "FAIL"

    html = page.request.get(html_url)  # the browser context's cookies: the learner's session
    assert html.ok, html.status
    assert html.headers["content-type"].startswith("text/html")
    assert f"<title>The lying health check: {word}</title>" in html.text()

    assert html.headers.get("content-disposition", "inline").startswith("inline")  # a tab ...
    download = page.request.get(html_dl_url)  # ... or downloads
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.body() == html.body()
    with page.expect_download() as dl:
        page.locator("#result .reports a", has_text="download HTML").click()
    assert dl.value.suggested_filename.endswith("report.html")
    assert word in open(dl.value.path(), encoding="utf-8").read()

    resp = page.request.get(json_url)
    assert resp.ok, resp.status
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["content-disposition"].startswith("attachment")
    with page.expect_download() as dl:
        page.locator("#result .reports a", has_text="JSON").click()
    assert dl.value.suggested_filename.endswith("report.json")
    report = json.loads(open(dl.value.path(), encoding="utf-8").read())
    assert report == resp.json()
    assert report["slug"] == SLUG
    assert report["passed"] is passed and report["result"]["passed"] is passed
    assert report["result"]["headline"] == page.locator("#result .headline").inner_text()
    evidence = report["result"]["evidence"]
    assert evidence and all(not e.startswith("FAIL") for e in evidence) is passed


@pytest.mark.timeout(240)
def test_lab_walk(page: Page, site, artifacts):  # noqa: F811
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: d.accept())  # "Show the documented fix?"

    # The list: every lab, nothing started yet.
    page.goto(f"{site}/labs/")
    items = page.locator(".lab-item")
    expect(items).to_have_count(N_LABS)
    expect(page.locator(".lead")).to_contain_text(f"You have passed 0 of {N_LABS}")
    expect(page.locator(".lab-item.passed, .lab-item.tried")).to_have_count(0)
    page.locator(".lab-item a", has_text="The lying health check").click()
    expect(page).to_have_url(re.compile(rf"/labs/{SLUG}/$"))
    expect(page.locator(".scale")).to_contain_text("1:10")
    expect(page.locator("#gutter")).to_contain_text("1\n2\n3")  # lab.js is running

    # An invalid change, shown in place with its path and a mark on its line.
    editor = page.locator("#document")
    start = editor.input_value()
    assert "interval: 300ms" in start
    bad = start.replace("interval: 300ms", "interval: 5", 1)
    line = bad.split("\n").index(next(l for l in bad.split("\n") if "interval: 5" in l)) + 1
    editor.fill(bad)
    problem = page.locator("#errors li")
    expect(problem).to_have_count(1, timeout=10_000)
    expect(problem.locator("code")).to_have_text("pools.web.health.interval")
    expect(problem).to_contain_text("a duration needs a unit: write e.g. '5s' or '5ms', not 5")
    expect(problem.locator("a")).to_have_text(f"line {line}")
    gutter = page.locator("#gutter").inner_text().split("\n")
    assert gutter[line - 1] == "●" and gutter.count("●") == 1
    problem.locator("a").click()  # jumps to the line: the editor selects it
    assert page.evaluate("() => { const e = document.querySelector('#document');"
                         " return e.value.slice(e.selectionStart, e.selectionEnd); }").strip() \
        == "interval: 5          # 3 s in production at 1:10"
    page.locator(".editor").screenshot(path=artifacts / "labs-error-in-place.png")

    # A run with the error is refused whole: nothing starts.
    page.locator("#run").click()
    expect(problem.locator("code")).to_have_text("pools.web.health.interval")
    expect(page.locator("#result")).to_be_hidden()

    # Fixed back: the proxy accepts it.
    editor.fill(start)
    expect(page.locator("#errors .ok")).to_have_text("✓ the proxy accepts this config",
                                                     timeout=10_000)
    assert "●" not in page.locator("#gutter").inner_text()

    # The starting config fails, with the evidence in numbers, a chart and diagrams.
    _verdict_after_run(page, "FAIL")
    result = page.locator("#result")
    expect(result.locator(".headline")).to_contain_text(re.compile(
        r"^\d+ requests failed after b2's dependency went down \(target at most 15\)$"))
    bad_lines = result.locator(".evidence li.bad")
    expect(bad_lines.first).to_contain_text(re.compile(r"\d+ of \d+ requests failed; "
                                                       r"the target is at most 15"))
    expect(result.locator(".evidence")).to_contain_text("b2 was never taken out of rotation")
    expect(result.locator(".chart-title")).to_have_text("Requests per second, by backend")
    expect(result.locator(".chart .uplot canvas").first).to_be_visible()
    expect(result.locator(".chart-hint")).to_contain_text("× 10 = production seconds")
    expect(result.locator(".diagrams figure")).to_have_count(2)
    expect(result.locator(".diagrams .mermaid-box svg")).to_have_count(2, timeout=15_000)
    expect(result.locator(".diagrams .mermaid-box > pre")).to_have_count(0)  # no fallback
    expect(result.locator(".figures")).to_contain_text(re.compile(r"locust saw \d+ requests"))
    sandbox_link = result.locator(".figures a").get_attribute("href")
    assert re.fullmatch(r"/lab/lab-[0-9a-f]{12}/", sandbox_link)
    result.screenshot(path=artifacts / "labs-failed.png")
    _reports(page, site, passed=False)

    # The documented fix, on request, loaded into the editor.
    expect(page.locator("#solution")).to_be_hidden()
    page.locator("#reveal").click()
    solution = page.locator("#solution")
    expect(solution).to_be_visible()
    expect(solution.locator(".why")).not_to_be_empty()
    expect(solution.locator(".yaml")).to_contain_text("path: /health/ready/cached")
    # The fix's Markdown rendered like a lesson: emphasis and code, no raw asterisks.
    expect(solution.locator(".why strong").first).to_be_visible()
    expect(solution.locator(".why code").first).to_be_visible()
    assert "**" not in solution.locator(".why").inner_text()
    solution.locator("#use-solution").click()
    assert "path: /health/ready/cached" in editor.input_value()
    expect(page.locator("#errors .ok")).to_be_visible(timeout=10_000)

    # Run again: the same traffic, now it passes.
    _verdict_after_run(page, "PASS")
    expect(result.locator(".headline")).to_contain_text(re.compile(
        r"^\d+ requests failed after b2's dependency went down \(target at most 15\)$"))
    expect(result.locator(".evidence li.bad")).to_have_count(0)
    expect(result.locator(".evidence li.ok")).to_have_count(2)
    expect(result.locator(".evidence")).to_contain_text("b2 was taken out of rotation")
    expect(result.locator(".diagrams .mermaid-box svg")).to_have_count(2, timeout=15_000)
    result.screenshot(path=artifacts / "labs-passed.png")
    _reports(page, site, passed=True)

    # The page remembers: a passed badge, both runs listed.
    page.reload()
    # Passed, but after showing the fix: recorded and shown as such.
    expect(page.locator(".scale .badge.pass")).to_have_text("passed after showing the fix")
    expect(page.locator(".recent li")).to_have_count(2)
    expect(page.locator(".recent .badge.pass")).to_have_count(1)
    expect(page.locator(".recent .badge.fail")).to_have_count(1)

    # Back on the list: the progress shows.
    page.goto(f"{site}/labs/")
    expect(page.locator(".lead")).to_contain_text(f"You have passed 1 of {N_LABS}")
    mine = page.locator(".lab-item.passed")
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("The lying health check")
    expect(mine.locator(".state")).to_have_attribute("aria-label",
                                                     "passed after showing the fix")
    expect(mine.locator(".meta")).to_contain_text("2 runs · passed after showing the fix")
    # Each lab's difficulty and time, and the time scale in words.
    expect(page.locator(".lab-item .difficulty")).to_have_count(N_LABS)
    expect(mine.locator(".facts")).to_contain_text("introductory · about 15 min · each run "
                                                   "about 12 s")
    expect(page.locator("#time-scale-note")).to_contain_text(
        '"1:10" means one second in the lab stands for ten seconds in production')
    page.screenshot(path=artifacts / "labs-list.png", full_page=True)

    # Filter by concept with the keyboard only: the select, then the button.
    page.locator("#concept-filter").focus()
    page.keyboard.press("Tab")
    expect(page.locator(".lab-filter button")).to_be_focused()
    page.locator("#concept-filter").select_option("outlier-ejection")
    page.locator(".lab-filter button").press("Enter")
    expect(page).to_have_url(re.compile(r"/labs/\?concept=outlier-ejection$"))
    expect(items).to_have_count(1)
    expect(items).to_contain_text("The fast-failing server that swallows traffic")
    expect(page.locator(".filter-status")).to_contain_text("Showing 1 of")
    # Progress on the filtered list still counts every lab.
    expect(page.locator(".lead")).to_contain_text(f"You have passed 1 of {N_LABS}")
    page.locator(".filter-status a", has_text="Show all labs").click()
    expect(items).to_have_count(N_LABS)
    assert errors == []


# ---------------------------------------------------------------- one count everywhere

def _moment_counts(text: str) -> tuple[int, int, int]:
    """(failed, drawn, folded) as the "From the freeze to the removal" diagram says them."""
    m = re.search(r"(\d+) failed requests?:\s+(\d+) drawn(?:,\s+(\d+) folded)?", text)
    assert m, text[:500]
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def _svg_text(svg) -> str:
    """The words of a Mermaid SVG, every text element (and each of its wrapped lines) joined
    by spaces: a wrapped note can split a phrase anywhere."""
    return svg.evaluate("""svg => [...svg.querySelectorAll('text')].map(t => {
        const spans = t.querySelectorAll('tspan');
        return (spans.length ? [...spans].map(s => s.textContent) : [t.textContent])
          .join(' ').replace(/\\s+/g, ' ').trim();
      }).join(' ')""")


@pytest.mark.timeout(240)
def test_health_check_window_one_count_and_a_report_that_renders_offline(
        page: Page, site, artifacts, tmp_path):  # noqa: F811
    """The headline's count is the page diagram's (rows drawn + rows folded) and the
    report's; the downloaded report, opened from disk with the network blocked, draws
    every diagram and its chart."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{site}/labs/health-check-window/")
    expect(page.locator("link[rel~='icon']")).to_have_count(1)  # the site's icon
    _verdict_after_run(page, "FAIL")
    result = page.locator("#result")
    headline = result.locator(".headline").inner_text()
    n = int(re.match(r"^(\d+) requests failed while frozen b2 stayed in rotation", headline)
            .group(1))
    assert n > 0
    expect(result.locator(".evidence")).to_contain_text(f", {n} requests failed; the target")

    # The page's diagram, as Mermaid drew it: its own count, the rows drawn, the fold.
    figure = result.locator(".diagrams figure", has_text="From the freeze to the removal")
    expect(figure.locator("svg")).to_have_count(1, timeout=15_000)
    drawn_text = _svg_text(figure.locator("svg"))
    failed, drawn, folded = _moment_counts(drawn_text)
    assert failed == n and drawn + folded == n
    arrows = re.findall(r"→\s+\d{3}\s+[A-Z-]{2}\s+after\s+\d+\s+ms", drawn_text)
    assert len(arrows) == drawn
    if folded:
        assert re.search(rf"\.\.\.\s+{folded}\s+more\s+failed\s+request", drawn_text)
    figure.screenshot(path=artifacts / "labs-window-diagram.png")

    # The report: the same headline and the same diagram counts.
    with page.expect_download() as dl:
        page.locator("#result .reports a", has_text="download HTML").click()
    report_path = tmp_path / "report.html"
    dl.value.save_as(report_path)
    report = html.unescape(report_path.read_text(encoding="utf-8"))
    assert headline in report
    source = re.search(r"<pre class='mermaid'>(sequenceDiagram\n  participant C as clients.*?)"
                       r"</pre>", report, re.S).group(1)
    assert _moment_counts(source) == (n, drawn, folded)
    assert len([line for line in source.splitlines() if "--xP" in line]) == drawn

    # Opened from disk, nothing from the network: every diagram and the chart render.
    offline = page.context.browser.new_context()
    requested: list[str] = []

    def only_files(route):
        requested.append(route.request.url)
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            route.abort()
    offline.route("**/*", only_files)
    disk = offline.new_page()
    disk.on("pageerror", lambda exc: errors.append(f"report: {exc}"))
    disk.goto(report_path.as_uri())
    diagrams = disk.locator("pre.mermaid")
    count = diagrams.count()
    assert count >= 2
    expect(disk.locator("pre.mermaid svg")).to_have_count(count, timeout=20_000)
    expect(disk.locator("h2:has-text('Chart') + svg polyline").first).to_be_attached()
    moment = disk.locator("section", has_text="From the freeze to the removal")
    assert _moment_counts(_svg_text(moment.locator("svg"))) == (n, drawn, folded)
    # Long notes wrap inside the diagram instead of being cut at its edge.
    widths = disk.evaluate("""() => [...document.querySelectorAll('pre.mermaid svg')].map(svg => {
        const box = svg.getBoundingClientRect();
        return [...svg.querySelectorAll('text')].every(t => {
          const r = t.getBoundingClientRect();
          return r.width === 0 || (r.left >= box.left - 2 && r.right <= box.right + 2);
        });
      })""")
    assert all(widths), widths
    disk.screenshot(path=artifacts / "labs-report-offline.png", full_page=True)
    assert all(url.startswith("file://") for url in requested), requested
    offline.close()
    assert errors == []


# ---------------------------------------------------------------- answers are earned

@pytest.mark.timeout(240)
def test_tracing_lab_wrong_answers_do_not_give_the_cause_away(page: Page, site,  # noqa: F811
                                                             artifacts):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{site}/labs/502-503-504/")
    _verdict_after_run(page, "FAIL")
    tracing = page.locator("#tracing")
    expect(tracing).to_be_visible()
    expect(tracing.locator("table.failed tbody tr").first).to_be_visible()
    # The cause words are on the page, next to the form they are for.
    words = tracing.locator(".cause-words dt code")
    expect(words).to_have_count(7)
    form_box = tracing.locator("#answers").bounding_box()
    evidence_box = tracing.locator(".tracing-evidence").bounding_box()
    # Side by side: the form's column starts right of the evidence's (the form column is
    # sticky, so its height on the page depends on the scroll position, its x does not).
    assert form_box["x"] >= evidence_box["x"] + evidence_box["width"] - 1

    # Wrong on purpose: A and C get every field wrong, B only its cause.
    wrong = {"A": ("504", "drain-cut", "b3"), "B": ("503", "connect-failed", "none"),
             "C": ("502", "bad-response", "b4")}
    for incident, (status, cause, backend) in wrong.items():
        tracing.locator(f"select[name='{incident}.status']").select_option(status)
        tracing.locator(f"select[name='{incident}.cause']").select_option(cause)
        tracing.locator(f"select[name='{incident}.backend']").select_option(backend)
    tracing.locator("#answers button").click()
    feedback = tracing.locator(".answer-feedback li")
    expect(feedback).to_have_count(3)
    expect(feedback.nth(0)).to_contain_text("incident A: status and cause and backend wrong")
    expect(feedback.nth(1)).to_contain_text("incident B: cause wrong")
    expect(feedback.nth(1)).to_contain_text("termination code")
    expect(page.locator("#result .headline")).to_have_text("0 of 3 incidents named correctly")
    tracing.locator("table.failed tbody tr").first.click()  # a trace, as a learner opens it
    expect(tracing.locator(".trace svg")).to_have_count(1, timeout=15_000)
    tracing.screenshot(path=artifacts / "labs-tracing-wrong-answers.png")

    # The right causes are nowhere in what the page says back: not in the feedback, the
    # evidence, the headline or the diagrams, and the page never pairs an incident with
    # its answer.
    said = " ".join([tracing.locator(".answer-feedback").inner_text(),
                     page.locator("#result").inner_text()])
    for right in ("backend-closed", "no-backend", "response-timeout"):
        assert right not in said, right
    body = page.locator("body").inner_text()
    assert "the events say" not in body
    for pair in ("502 backend-closed on b1", "503 no-backend on none",
                 "504 response-timeout on b2"):
        assert pair not in body
    assert errors == []
