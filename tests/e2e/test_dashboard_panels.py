"""The dashboard's "Why this backend?" panel, the stream's why column and the controls'
answers, in headless Chromium against a real sandbox, bridge and daphne (conftest's stack).

What a learner sees: the panel follows the newest decision until they pick one, then says
it is pinned and offers the way back to live; every algorithm's why is shown whole; a
control's success message is its sentence (never "....null"); a refused value does not stay
in its input; the termination code links to the error contract that defines it.
"""
from __future__ import annotations

import urllib.request

from playwright.sync_api import Page, expect


def send(proxy_url: str, path: str) -> None:
    req = urllib.request.Request(proxy_url + path, headers={"X-Request-Id": path.strip("/")})
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


def test_why_panel_follows_live_until_pinned(page: Page, stack, artifacts):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(stack.web_url + "/")
    expect(page.locator("#feed-status")).to_have_text("live (WebSocket)", timeout=10_000)
    mode, title = page.locator("#detail-mode-text"), page.locator("#detail .detail-title")

    # Live: the panel shows the newest decision, request after request.
    for path in ("/follow-1", "/follow-2", "/follow-3"):
        send(stack.sandbox.proxy_url, path)
        expect(title).to_contain_text(f"GET {path}", timeout=10_000)
    expect(mode).to_contain_text("Following the newest decision")
    expect(page.locator("#detail-live")).to_be_hidden()

    # Pinned: the learner's pick stays while newer decisions arrive.
    page.locator("#stream li", has_text="/follow-1").click()
    expect(title).to_contain_text("GET /follow-1")
    expect(mode).to_contain_text("Pinned")
    send(stack.sandbox.proxy_url, "/follow-4")
    expect(page.locator("#stream li", has_text="/follow-4")).to_have_count(1, timeout=10_000)
    page.wait_for_timeout(1500)  # longer than the panel's follow interval (1 s)
    expect(title).to_contain_text("GET /follow-1")
    page.screenshot(path=artifacts / "why-pinned.png")

    # Back to live: the newest again.
    page.click("#detail-live")
    expect(title).to_contain_text("GET /follow-4", timeout=5_000)
    expect(mode).to_contain_text("Following the newest decision")

    # The termination code links to the contract that defines it.
    link = page.locator("#detail a", has_text="what the codes mean")
    expect(link).to_have_attribute("href", "/errors/#termination-codes")
    link.click()
    expect(page.locator("h2#termination-codes")).to_be_visible()
    expect(page.locator("tr", has_text="response head did not come in time").first).to_contain_text("PH")
    expect(page.locator(".site-nav a", has_text="Dashboard")).to_have_attribute("href", "/")
    assert errors == []


def test_the_why_column_is_whole_for_every_algorithm(page: Page, stack):
    page.goto(stack.web_url + "/")
    expect(page.locator("#feed-status")).to_have_text("live (WebSocket)", timeout=10_000)
    # The pool list fills from the first state the page gets; the form needs a pool.
    expect(page.locator("#panel-balancer .pool-select")).to_have_value("web", timeout=10_000)
    result = page.locator("#panel-balancer .result")
    for algorithm, must_show in (("least_outstanding_requests", ["counts={b1: ", "b3: ", "tied=["]),
                                 ("power_of_two_choices", ["draws=[", "counts={"]),
                                 ("consistent_hash", ["hash_key=", "ring_points="])):
        page.select_option("#algorithm-select", algorithm)
        page.click("#panel-balancer button[type=submit]")
        # The success message is the sentence, with nothing glued after its full stop.
        expect(result).to_have_text(f"Pool web now balances with {algorithm}.", timeout=10_000)
        path = f"/why-{algorithm}"
        send(stack.sandbox.proxy_url, path)
        why = page.locator("#stream li", has_text=path).locator(".why")
        expect(why).to_contain_text(algorithm, timeout=10_000)
        for text in must_show:
            expect(why).to_contain_text(text)
        # Shown whole: the text wraps inside its column, nothing is cut off.
        assert why.evaluate("n => n.scrollWidth <= n.clientWidth + 1 && n.scrollHeight <= n.clientHeight + 1")


def test_a_refused_value_goes_back_to_the_running_one(page: Page, stack):
    page.goto(stack.web_url + "/")
    expect(page.locator("#proxy-status")).to_have_text("reachable", timeout=10_000)

    # Health: interval 0s is refused; the form shows the running interval again.
    page.click("#tab-health")
    interval = page.locator("#health-form input[name=interval]")
    expect(interval).to_have_value("200ms", timeout=5_000)
    interval.fill("0s")
    page.click("#health-form button[type=submit]")
    box = page.locator("#health-form .result")
    expect(box).to_contain_text("Refused", timeout=10_000)
    expect(box).to_contain_text("pools.web.health")
    expect(box).to_contain_text("The form shows the running values again.")
    expect(interval).to_have_value("200ms")

    # Weight: -1 is refused; the input shows the weight the proxy runs.
    page.click("#tab-backends")
    weight = page.locator("#backend-rows tr", has_text="b1").locator("input[name=weight]")
    weight.fill("-1")
    page.locator("#backend-rows tr", has_text="b1").locator("button", has_text="Set").click()
    expect(page.locator("#backend-result")).to_contain_text("Refused", timeout=10_000)
    expect(page.locator("#backend-result")).to_contain_text("b1 keeps weight 1.")
    expect(weight).to_have_value("1")

    # A change that is accepted still reads as one sentence.
    weight.fill("3")
    page.locator("#backend-rows tr", has_text="b1").locator("button", has_text="Set").click()
    expect(page.locator("#backend-result")).to_have_text("b1 now has weight 3.", timeout=10_000)
