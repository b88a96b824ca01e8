"""Issue 15's course pieces in a real browser: the simulated predict exercises (form, run,
result labelled as simulated), "Common claims, checked" callouts, vendor cards and the
coverage table, each passing axe-core's WCAG 2.1 A/AA rules (no serious or critical issue).
Reuses the accessibility test's site (one daphne, one sandbox) and axe helpers.
"""
from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.e2e.test_accessibility import assert_accessible, report, site  # noqa: F401 (fixture)


def test_simulated_exercises_claims_cards_and_coverage_in_the_browser(page: Page, site):  # noqa: F811
    failures: dict = {}

    page.goto(site.url + "/course/predict/dsr-bytes/")
    expect(page.locator("#sim-label")).to_contain_text("Simulation.")
    page.fill("input[name=download_bytes]", "36600")
    page.check("input[name=download_biggest][value=acks]")
    page.fill("input[name=download_share]", "1.7")
    page.fill("input[name=upload_share]", "98")
    page.click("#predict-submit")
    expect(page.locator("#result-h")).to_have_text("What the simulation gave")
    expect(page.locator("#run-score")).to_have_text("100%")
    expect(page.locator("table.sim-table").first).to_contain_text("36600 B")
    assert_accessible(page, "simulated predict result (DSR)", failures)

    page.goto(site.url + "/course/predict/alb-dns-scaling/")
    page.fill("input[name=share_30s]", "25")
    page.fill("input[name=settle]", "60")
    page.fill("input[name=share_later]", "50")
    page.check("input[name=who][value=none]")
    page.fill("input[name=nlb_failed]", "0")
    page.click("#predict-submit")
    expect(page.locator("#result-h")).to_have_text("What the simulation gave")
    # 50 % is 2.5 points off (within twice the tolerance: half marks); "none" is wrong.
    expect(page.locator("#run-score")).not_to_have_text("100%")
    assert_accessible(page, "simulated predict result (ALB DNS)", failures)

    page.goto(site.url + "/course/lessons/l4-vs-l7/")
    claim = page.locator("aside.callout-claim")
    expect(claim).to_have_count(1)
    expect(claim.locator(".claim-source a").first).to_have_attribute(
        "href", "https://docs.aws.amazon.com/elasticloadbalancing/latest/network/edit-target-group-attributes.html")
    assert_accessible(page, "lesson with a checked claim", failures)

    page.goto(site.url + "/course/lessons/draining-and-timeouts/")
    expect(page.locator(".vendor-card-set")).to_have_count(2)
    assert_accessible(page, "lesson with vendor cards", failures)

    page.goto(site.url + "/course/")
    rows = page.locator("#coverage-table tbody tr")
    expect(rows).to_have_count(29)
    # Every concept has its three pieces now; the security boundary's graded piece is a
    # predict exercise on the real proxy, linked from the table.
    expect(page.locator('#coverage-table td[data-col="graded"]', has_text="missing")).to_have_count(0)
    graded = page.locator('#coverage-table tr[data-concept="balancer-roles"] td[data-col="graded"] a')
    expect(graded).to_have_attribute("href", "/course/predict/security-boundary/")
    assert not failures, report(failures)
