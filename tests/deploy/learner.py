"""A learner on a deployed site (compose or a Swarm stack, front door on 127.0.0.1:30700):
sets up a lesson's live sandbox through the site, as a browser would (a session, a CSRF
token), and watches their dashboard's socket while requests go through their proxy.
Shared by tests/deploy/test_compose_up.py (container driver) and test_swarm.py (swarm)."""
from __future__ import annotations

import http.cookiejar
import json
import secrets
import time
import urllib.error
import urllib.request

import websocket

FRONT = "http://127.0.0.1:30700"


def set_up_live_sandbox(lesson: str = "health-checks") -> tuple[dict, str]:
    """POST the lesson's "set up my sandbox"; (the site's answer, the session's cookies)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = f"{FRONT}/course/lessons/{lesson}/"
    with opener.open(page, timeout=30) as resp:
        assert resp.status == 200
    token = next(c.value for c in jar if c.name == "csrftoken")
    req = urllib.request.Request(page + "live", data=b"", method="POST", headers={
        "X-CSRFToken": token, "Accept": "application/json", "Referer": page})
    try:
        with opener.open(req, timeout=180) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"POST {page}live: {exc.code} {exc.read()[:800]!r}") from None
    return answer, "; ".join(f"{c.name}={c.value}" for c in jar)


def dashboard_streams(sandbox: str, proxy_url: str, cookie: str, timeout: float = 60) -> dict:
    """The learner's dashboard socket shows the routing decision of a request sent through
    their proxy; returns that tick."""
    sock = websocket.create_connection(f"ws://127.0.0.1:30700/ws/lab/{sandbox}/",
                                       origin=FRONT, timeout=10, cookie=cookie)
    try:
        assert json.loads(sock.recv())["kind"] == "first_paint"
        marker = f"/learner-{secrets.token_hex(6)}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(proxy_url + marker, timeout=10).read()
            except (urllib.error.URLError, OSError):
                pass  # the proxy's first health checks may not have passed yet
            until = time.monotonic() + 3
            while time.monotonic() < until:
                msg = json.loads(sock.recv())
                if msg.get("kind") == "tick" and marker in json.dumps(msg.get("decisions")):
                    return msg
        raise AssertionError(f"no tick of sandbox {sandbox} showed {marker} within {timeout}s")
    finally:
        sock.close()
