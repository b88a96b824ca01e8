"""One simulated learner, driving the real site as a browser would: HTTP and a WebSocket.

Each learner has its own cookie jar (its own Django session, so its own learner key and
sandbox) and its own client address on 127.0.0.0/8 (``127.0.1.<n>``): the site's per-address
rates (labs/services/rates.py) then count each learner apart, as they would count the
laptops of a classroom. Every step is bounded by a deadline; a step that fails is recorded
as the learner's error and the learner goes on with what can still be done.

Also here: the instructor's part (log in, create a workshop, read its join code), through
the same pages an instructor uses.
"""
from __future__ import annotations

import html
import json
import re
import secrets
import socket
import threading
import time
from urllib.parse import urlsplit

import requests
import websocket
from requests.adapters import HTTPAdapter

from labs.cohort.summary import LearnerResult, RunResult

DOCUMENT = re.compile(r'<textarea id="document"[^>]*>(.*?)</textarea>', re.S)
FINAL = ("done", "failed", "refused")


class StepFailed(Exception):
    """A step of the learner's path did not give what a browser would have got."""


class _FromAddress(HTTPAdapter):
    """Connections from one loopback address (a learner's own 'machine')."""

    def __init__(self, source: str):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def client(source: str | None = None) -> requests.Session:
    session = requests.Session()
    if source:
        adapter = _FromAddress(source)
        session.mount("http://", adapter)
    return session


def learner_address(index: int) -> str:
    """127.0.1.1, 127.0.1.2, ... 127.0.1.254, 127.0.2.1, ...: one per learner."""
    return f"127.0.{1 + index // 254}.{1 + index % 254}"


def _check(resp: requests.Response, what: str, *ok: int) -> requests.Response:
    if resp.status_code not in (ok or (200,)):
        raise StepFailed(f"{what}: HTTP {resp.status_code} {resp.text[:300]!r}")
    return resp


def _csrf(session: requests.Session) -> dict:
    token = session.cookies.get("csrftoken")
    if not token:
        raise StepFailed("the site set no csrftoken cookie")
    return {"X-CSRFToken": token}


# ---------------------------------------------------------------- the instructor

def open_workshop(base: str, username: str, password: str, title: str,
                  timeout: float = 30.0) -> str:
    """Log in as an instructor, create a workshop, return its join code."""
    s = client()
    _check(s.get(f"{base}/workshops/login/", timeout=timeout), "the login page")
    resp = s.post(f"{base}/workshops/login/", timeout=timeout, data={
        "username": username, "password": password,
        "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")})
    _check(resp, "logging in")
    if "/login/" in resp.url:
        raise StepFailed(f"logging in as {username} did not work: still on {resp.url}")
    resp = s.post(f"{base}/workshops/", timeout=timeout, data={
        "title": title, "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")})
    _check(resp, "creating a workshop")
    match = re.search(r"/workshops/(\d+)/$", resp.url)
    if not match:
        raise StepFailed(f"creating a workshop led to {resp.url}, not its cockpit")
    data = _check(s.get(f"{base}/workshops/{match.group(1)}/cockpit.json", timeout=timeout),
                  "the cockpit's JSON").json()
    return data["workshop"]["code"]


# ---------------------------------------------------------------- a learner

class Dashboard:
    """The learner's dashboard socket, read in a thread: counts messages, spots a marker."""

    def __init__(self, base: str, sandbox_id: str, session: requests.Session, source: str | None,
                 timeout: float):
        parts = urlsplit(base)
        raw = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout,
                                       source_address=(source, 0) if source else None)
        cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
        self.ws = websocket.create_connection(
            f"ws://{parts.netloc}/ws/lab/{sandbox_id}/", socket=raw, origin=base,
            cookie=cookie, timeout=timeout)
        first = json.loads(self.ws.recv())
        if first.get("kind") != "first_paint":
            raise StepFailed(f"the dashboard's first message was {first.get('kind')!r}, "
                             "not first_paint")
        self.messages = 1
        self.markers: set[str] = set()
        self.closed = threading.Event()
        self._seen = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.ws.settimeout(1.0)
        while not self.closed.is_set():
            try:
                raw = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                break
            self.messages += 1
            with self._seen:
                for marker in re.findall(r"/cohort-[0-9a-f]{12}", raw or ""):
                    self.markers.add(marker)
                self._seen.notify_all()

    def wait_for(self, marker: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._seen:
            while marker not in self.markers:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._seen.wait(min(left, 0.3))
        return True

    def close(self) -> None:
        self.closed.set()
        try:
            self.ws.close(timeout=2)
        except (websocket.WebSocketException, OSError):
            pass  # the server may have closed it already; nothing left to release
        self._thread.join(3)


class Learner:
    def __init__(self, base: str, code: str, index: int, slug: str, *,
                 step_timeout: float = 60.0, run_timeout: float = 300.0,
                 poll_s: float = 0.5, spread_addresses: bool = True):
        self.base = base.rstrip("/")
        self.code = code
        self.slug = slug
        self.source = learner_address(index) if spread_addresses else None
        self.session = client(self.source)
        self.step_timeout = step_timeout
        self.run_timeout = run_timeout
        self.poll_s = poll_s
        self.result = LearnerResult(name=f"learner-{index + 1:02d}")
        self.sandbox: dict = {}

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    # -- steps --------------------------------------------------------------------------

    def join(self) -> None:
        s, t = self.session, self.step_timeout
        started = time.monotonic()
        _check(s.get(self.url(f"/workshops/join/{self.code}/"), timeout=t), "the join page")
        resp = s.post(self.url(f"/workshops/join/{self.code}/"), timeout=t, data={
            "code": self.code, "display_name": self.result.name,
            "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")})
        _check(resp, "joining the workshop")
        if f"/workshops/w/{self.code}/" not in resp.url:
            raise StepFailed(f"joining led to {resp.url}, not the learner's workshop page")
        self.result.join_s = time.monotonic() - started

    def start_sandbox(self) -> None:
        started = time.monotonic()
        resp = self.session.post(self.url(f"/workshops/w/{self.code}/sandbox"),
                                 headers=_csrf(self.session), timeout=self.run_timeout)
        data = _check(resp, "starting my sandbox").json()
        self.result.sandbox_start_s = time.monotonic() - started
        self.sandbox = data["sandbox"]
        if not (self.sandbox.get("id") and self.sandbox.get("proxy_url")):
            raise StepFailed(f"the sandbox answer has no id or proxy URL: {data}")

    def open_dashboard(self) -> Dashboard:
        """The learner's dashboard: its page, its socket, and a request of ours seen live."""
        _check(self.session.get(self.url(self.sandbox["dashboard_url"]),
                                timeout=self.step_timeout), "the dashboard page")
        started = time.monotonic()
        board = Dashboard(self.base, self.sandbox["id"], self.session, self.source,
                          self.step_timeout)
        marker = f"/cohort-{secrets.token_hex(6)}"
        deadline = time.monotonic() + self.step_timeout
        while time.monotonic() < deadline:
            try:
                requests.get(self.sandbox["proxy_url"] + marker, timeout=5)
            except requests.RequestException:
                pass  # the sandbox's proxy may still be settling; the next try tells
            if board.wait_for(marker, 1.0):
                self.result.dashboard_live_s = time.monotonic() - started
                return board
        board.close()
        raise StepFailed(f"no live tick with our request {marker} on the dashboard within "
                         f"{self.step_timeout:g}s")

    def starting_config(self) -> str:
        page = _check(self.session.get(self.url(f"/labs/{self.slug}/"),
                                       timeout=self.step_timeout), "the lab page").text
        match = DOCUMENT.search(page)
        if not match:
            raise StepFailed("the lab page has no config editor (textarea#document)")
        return html.unescape(match.group(1))

    def fix(self) -> str:
        resp = self.session.post(self.url(f"/labs/{self.slug}/solution"),
                                 headers=_csrf(self.session), timeout=self.step_timeout)
        return _check(resp, "showing the fix").json()["yaml"]

    def run_lab(self, label: str, document: str, expected_pass: bool) -> RunResult:
        run = RunResult(label=label, expected_pass=expected_pass)
        self.result.runs.append(run)
        started = time.monotonic()
        resp = self.session.post(self.url(f"/labs/{self.slug}/runs"),
                                 json={"document": document},
                                 headers=_csrf(self.session), timeout=self.step_timeout)
        status_url = _check(resp, f"starting the {label} run", 202).json()["status_url"]
        deadline = started + self.run_timeout
        while True:
            status = _check(self.session.get(self.url(status_url), timeout=self.step_timeout),
                            f"polling the {label} run").json()
            if status.get("state") in FINAL:
                break
            if time.monotonic() > deadline:
                raise StepFailed(f"the {label} run did not end within {self.run_timeout:g}s "
                                 f"(last: {status.get('phase')}: {status.get('message')})")
            time.sleep(self.poll_s)
        run.seconds = time.monotonic() - started
        run.state = status["state"]
        result = status.get("result") or {}
        if run.state == "done" and result.get("graded", True):
            run.passed = bool(result.get("passed"))
        sandbox = result.get("sandbox") or {}
        run.sandbox_start_s = sandbox.get("start_seconds")
        pss = (sandbox.get("pss_bytes") or {}).get("total")
        run.sandbox_mem_mb = pss / 1e6 if pss else None
        run.driver = (sandbox.get("placement") or {}).get("driver")
        if run.state == "done":
            run.requests = int((result.get("stats") or {}).get("requests") or 0)
        if not run.as_expected:
            traffic = " (its traffic got no answer at all)" if run.requests == 0 else ""
            self.result.errors.append(
                f"the {label} run: {run.state}, passed={run.passed} (wanted "
                f"{'a pass' if expected_pass else 'a fail'}){traffic}: {status.get('message')}")
        return run

    # -- the whole path -----------------------------------------------------------------

    def run(self) -> LearnerResult:
        board = None
        try:
            self.join()
            self.start_sandbox()
            board = self.open_dashboard()
            self.run_lab("start", self.starting_config(), expected_pass=False)
            self.run_lab("fix", self.fix(), expected_pass=True)
        except (StepFailed, requests.RequestException, websocket.WebSocketException,
                OSError, ValueError, KeyError) as exc:
            self.result.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if board is not None:
                self.result.ticks = board.messages
                board.close()
        return self.result


def drive(base: str, code: str, count: int, slug: str, **options) -> list[LearnerResult]:
    """``count`` learners at once, one thread each (they spend their time waiting)."""
    learners = [Learner(base, code, i, slug, **options) for i in range(count)]
    results: list[LearnerResult | None] = [None] * count

    def one(i: int) -> None:
        results[i] = learners[i].run()

    # Daemons: an interrupted cohort (Ctrl-C, SIGTERM) tears down and exits without them.
    threads = [threading.Thread(target=one, args=(i,), name=f"learner-{i + 1}", daemon=True)
               for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]
