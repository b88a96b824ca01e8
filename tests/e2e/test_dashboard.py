"""The live dashboard in headless Chromium against a real sandbox, bridge and daphne."""
import json
import os
import signal
import urllib.error
import urllib.request

from playwright.sync_api import Page, expect


def send(proxy_url: str, path: str, request_id: str) -> int:
    req = urllib.request.Request(proxy_url + path, headers={"X-Request-Id": request_id})
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def backend_health(admin_url: str, name: str) -> str:
    with urllib.request.urlopen(f"{admin_url}/state", timeout=3) as resp:
        state = json.load(resp)
    return next(b["health"] for b in state["pools"]["web"]["backends"] if b["name"] == name)


def test_dashboard_live(page: Page, stack, artifacts):
    sb = stack.sandbox
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(stack.web_url + "/")

    # Connected: the proxy answers and ticks arrive over the WebSocket (Redis layer).
    expect(page.locator("#proxy-status")).to_have_text("reachable", timeout=10_000)
    expect(page.locator("#feed-status")).to_have_text("live (WebSocket)")
    expect(page.locator("#proxy-url")).to_have_text(sb.proxy_url)

    # The topology is a Mermaid SVG drawn from GET /state.
    topology = page.locator("#topology svg")
    expect(topology).to_be_visible(timeout=10_000)
    expect(topology).to_contain_text("pool web")
    expect(topology).to_contain_text("b3 · healthy", timeout=10_000)

    # A request through the proxy shows up in the decision stream with its why.
    for i in range(3):
        assert send(sb.proxy_url, f"/e2e-hello/{i}", f"e2e-hello-{i}") == 200
    row = page.locator("#stream li button", has_text="/e2e-hello/2")
    expect(row).to_be_visible(timeout=5_000)
    expect(row).to_contain_text("round_robin")
    row.click()
    detail = page.locator("#detail")
    expect(detail).to_contain_text("GET /e2e-hello/2")
    expect(detail).to_contain_text("takes the eligible backends in turn")
    expect(detail.locator("table.cands tr.chosen")).to_have_count(1)
    expect(detail).to_contain_text("e2e-hello-2")
    path = page.locator("#request-diagram svg")
    expect(path).to_be_visible(timeout=5_000)
    expect(path).to_contain_text("GET /e2e-hello/2")
    page.wait_for_timeout(1200)  # let the charts draw a few points
    page.screenshot(path=artifacts / "dashboard.png", full_page=True)

    # The stream can be paused and stepped through.
    page.click("#pause")
    expect(page.locator("#step")).to_be_enabled()
    send(sb.proxy_url, "/while-paused", "e2e-paused")
    page.wait_for_timeout(700)
    expect(page.locator("#stream li button", has_text="/while-paused")).to_have_count(0)
    expect(page.locator("#stream-counters")).to_contain_text("waiting (paused)", timeout=3_000)
    page.click("#step")
    expect(page.locator("#stream li button", has_text="/while-paused")).to_have_count(1)
    expect(page.locator("#log")).to_contain_text("/while-paused")
    page.click("#pause")

    # Switching the algorithm goes through the admin API.
    page.select_option("#panel-balancer select[name=algorithm]", "least_connections")
    page.click("#panel-balancer button[type=submit]")
    expect(page.locator("#panel-balancer .result")).to_contain_text(
        "Pool web now balances with least_connections")
    expect(page.locator("#current-balancer")).to_contain_text("least_connections")

    # A refused change shows the proxy's own error, path and message.
    page.click("#tab-backends")
    weight = page.locator("#backend-rows tr", has_text="b1").locator("input[name=weight]")
    weight.fill("5000")
    weight.press("Enter")
    result = page.locator("#backend-result")
    expect(result).to_contain_text("Refused")
    expect(result).to_contain_text("pools.web.backends[0].weight")
    page.locator("#panel-backends").screenshot(path=artifacts / "refused-change.png")

    # Kill b2 from the page: within its health window (200 ms x 2) it turns unhealthy.
    page.click("#tab-faults")
    page.select_option("#fault-form select[name=backend]", "b2")
    page.select_option("#fault-select", "kill")
    page.click("#fault-form button[type=submit]")
    expect(page.locator("#fault-form .result")).to_contain_text("Killed b2")
    expect(page.locator("#topology svg")).to_contain_text("b2 · UNHEALTHY", timeout=5_000)
    assert backend_health(sb.admin_url, "b2") == "unhealthy"
    expect(page.locator("#log")).to_contain_text("b2 (web): health healthy → unhealthy")
    expect(page.locator("#banners")).to_contain_text("Part “b2” is down", timeout=5_000)
    page.locator("#timeline .tl-row", has_text="b2").click()
    episode = page.locator("#episode-diagram svg")
    expect(episode).to_contain_text("take b2 out of rotation", timeout=5_000)
    page.screenshot(path=artifacts / "backend-killed.png", full_page=True)

    # Restart it from the page (sandbox service): healthy again after 2 good probes.
    page.click("#restart-button")
    expect(page.locator("#restart-form .result")).to_contain_text("Restarted b2", timeout=15_000)
    expect(page.locator("#topology svg")).to_contain_text("b2 · healthy", timeout=5_000)
    expect(page.locator("#banners")).not_to_contain_text("b2", timeout=5_000)

    # The proxy goes away: the page says so plainly.
    os.kill(sb.pids["proxy"], signal.SIGKILL)
    expect(page.locator("#banners")).to_contain_text("The proxy does not answer", timeout=5_000)
    expect(page.locator("#proxy-status")).to_have_text("unreachable")
    page.screenshot(path=artifacts / "proxy-down.png")
    assert errors == []


def test_reduced_motion_is_respected(browser, stack, artifacts):
    context = browser.new_context(reduced_motion="reduce", viewport={"width": 1200, "height": 900})
    page = context.new_page()
    try:
        page.goto(stack.web_url + "/")
        expect(page.locator("#feed-status")).to_have_text("live (WebSocket)", timeout=10_000)
        page.select_option("#speed", "10")
        animation = page.evaluate("""() => {
            const li = document.createElement('li'); li.className = 'fresh';
            const b = document.createElement('button'); li.append(b);
            document.getElementById('stream').append(li);
            const name = getComputedStyle(b).animationName; li.remove(); return name; }""")
        assert animation == "none"
        assert page.evaluate("matchMedia('(prefers-reduced-motion: reduce)').matches")
    finally:
        context.close()
