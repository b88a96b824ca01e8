"""A learner's browser on the deployed dashboard, run as its own process by
tests/deploy/test_compose_up.py (Playwright's sync API keeps an event loop of its own, so it
stays out of the pytest process).

    python tests/deploy/page_probe.py http://127.0.0.1:30700/

Prints one line per step for the test to read: ``live <n>`` once the page's feed says
"live (WebSocket)" (n: WebSockets the page has opened so far), then waits for a line on
stdin (the test killed the worker), then prints ``lost`` when the page shows it is
reconnecting and ``live <n>`` again when its new socket is live; ``error <why>`` otherwise.
"""
from __future__ import annotations

import sys

from playwright.sync_api import sync_playwright

TIMEOUT_MS = 30_000


def say(line: str) -> None:
    print(line, flush=True)


def main(url: str) -> int:
    opened: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        try:
            page = browser.new_page()
            page.on("websocket", lambda ws: opened.append(ws.url))
            page.goto(url, wait_until="domcontentloaded")
            status = page.locator("#feed-status")
            try:
                status.filter(has_text="live (WebSocket)").wait_for(timeout=TIMEOUT_MS)
                say(f"live {len(opened)}")
                sys.stdin.readline()
                status.filter(has_text="reconnecting").wait_for(timeout=TIMEOUT_MS)
                say("lost")
                status.filter(has_text="live (WebSocket)").wait_for(timeout=TIMEOUT_MS)
                say(f"live {len(opened)}")
            except Exception as exc:  # the test reads why; the page's text says where it stood
                say(f"error {exc.__class__.__name__}: feed status was {status.inner_text()!r}")
                return 1
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
