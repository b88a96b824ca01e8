"""Replay from the dashboard, clicked through in Chromium: real traffic through the sandbox,
the Traffic tab's "What if?" link, the form, and the side-by-side result of three replay
sandboxes (the lab result's what-if page, fed a window of this dashboard)."""
from __future__ import annotations

import urllib.request

from playwright.sync_api import Page, expect

from tests.e2e.test_accessibility import axe_violations


def test_replay_the_last_seconds_from_the_dashboard(page: Page, stack, artifacts):
    sb = stack.sandbox
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(stack.web_url + "/")
    expect(page.locator("#proxy-status")).to_have_text("reachable", timeout=10_000)
    for i in range(40):
        with urllib.request.urlopen(f"{sb.proxy_url}/work?ms={1 + i % 4}", timeout=10) as resp:
            assert resp.status == 200

    page.get_by_role("tab", name="Traffic").click()
    page.locator("#replay-window-link").click()
    expect(page.get_by_role("heading", name="What if I had used another algorithm?")).to_be_visible()
    assert axe_violations(page) == []
    expect(page.get_by_label("round_robin (what your pool uses)")).to_be_checked()
    page.get_by_label("Replay the last").fill("60")
    page.get_by_label("random", exact=True).check()
    page.get_by_role("button", name="Replay side by side").click()

    # The page polls the background replay, then shows the runs side by side.
    table = page.locator("table.replay-table")
    expect(table).to_be_visible(timeout=120_000)
    expect(page.locator("#replay header")).to_contain_text("40 requests")
    for label in ("recorded (round_robin)", "round_robin", "least_outstanding_requests",
                  "random"):
        expect(table.get_by_role("rowheader", name=label, exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Where the runs part ways")).to_be_visible()
    # The pool's own algorithm is the baseline the others are compared with.
    expect(page.locator("#replay")).to_contain_text("random first sends a request elsewhere "
                                                    "than round_robin")
    expect(page.locator("#replay")).to_contain_text("drew from seed")
    page.screenshot(path=artifacts / "replay-window.png", full_page=True)
    assert axe_violations(page) == []
    page.get_by_role("link", name="Back to your dashboard").click()
    expect(page.locator("#proxy-status")).to_have_text("reachable", timeout=10_000)
    assert errors == []
