"""Two learners and an instructor in separate browser contexts: a sandbox is its owner's.

Real parts on loopback: daphne (fresh SQLite, migrated, one instructor), the shared
sandbox the site shows at /, and each learner's own sandbox started from their workshop
page. Bob then tries every page, API and socket of Ada's sandbox, with his own cookies
and CSRF token, and gets what a sandbox that does not exist gets: 404, the socket
refused. Ada's instructor may open it; the shared sandbox is read-only to learners.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.test_workshop import PASSWORD, run
from tests.e2e.conftest import FAST_HEALTH
from tests.explainer.parts import free_port, spawn, stop, wait_http

APIS = ["snapshot", "requests/r-1/diagram", "connections/c-1/diagram", "connections",
        "health/web/b1/diagram", "traffic"]
CONTROLS = {"weight": {"pool": "web", "backend": "b1", "weight": "5"},
            "fault": {"backend": "b1", "fault": "kill"},
            "restart": {"backend": "proxy"},
            "add-backend": {"pool": "web", "name": "x", "address": "192.0.2.1:80", "weight": "1"},
            "traffic-start": {"profile": "steady", "users": "2", "duration_s": "5"}}

SOCKET = """url => new Promise(resolve => {
  const ws = new WebSocket(url);
  ws.onmessage = e => { resolve('message:' + JSON.parse(e.data).kind); ws.close(); };
  ws.onclose = () => resolve('closed');
  setTimeout(() => resolve('timeout'), 8000);
})"""


class Site:
    def __init__(self, url: str, state_dir: Path):
        self.url, self.state_dir = url, state_dir

    def service(self):
        from labs.sandbox import SandboxService
        return SandboxService(state_dir=self.state_dir)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from labs.sandbox import SandboxService
    from labs.sandbox.topology import default_config

    base = tmp_path_factory.mktemp("ownership")
    state_dir, logs = base / "state", base / "logs"
    logs.mkdir()
    env = {"LBLAB_STATE_DIR": str(state_dir), "LBLAB_VAR_DIR": str(base / "var"),
           "LBLAB_SANDBOX": "shared", "LBLAB_ADMIN_URL": "", "LBLAB_EMBEDDED_BRIDGE": "1",
           "DEBUG": "0", "DJANGO_SETTINGS_MODULE": "lblab.settings", "REDIS_URL": "",
           "LBLAB_DEFAULT_SANDBOX_WRITERS": "staff", "LBLAB_WORKSHOP_BACKENDS": "2"}
    svc = SandboxService(state_dir=state_dir)
    config = default_config(["b1", "b2"])
    config["pools"]["web"]["health"] = FAST_HEALTH
    svc.create("shared", backends=["b1", "b2"], config=config, timeout=20)
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
        yield Site(f"http://127.0.0.1:{port}", state_dir)
    finally:
        if daphne is not None:
            stop(daphne)
        for sb in svc.list():
            svc.stop(sb.id, grace=3)


def csrf(context) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "csrftoken")


@pytest.mark.timeout(420)
def test_each_learner_reaches_only_their_own_sandbox(browser, site, artifacts):
    errors: list[str] = []

    def new_page():
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        return context, page

    teacher_ctx, teacher = new_page()
    teacher.goto(site.url + "/workshops/login/")
    teacher.fill("input[name=username]", "ines")
    teacher.fill("input[name=password]", PASSWORD)
    teacher.click("button[type=submit]")
    teacher.fill("input[name=title]", "Ownership")
    teacher.click("#new-workshop button[type=submit]")
    code = teacher.locator("#join-code").inner_text().strip()

    learners = {}
    for name in ("Ada", "Bob"):
        ctx, page = new_page()
        page.goto(f"{site.url}/workshops/join/{code.lower()}/")
        page.fill("input[name=display_name]", name)
        page.click("#join-form button[type=submit]")
        page.click("#sandbox-start")
        expect(page.locator("#sandbox-chip")).to_have_text("running", timeout=30_000)
        learners[name] = (ctx, page, page.locator("#sandbox-open").get_attribute("href"))
    (ada_ctx, ada, ada_dash), (bob_ctx, bob, bob_dash) = learners["Ada"], learners["Bob"]
    assert ada_dash != bob_dash and ada_dash.startswith("/lab/lab-")
    ada_id = ada_dash.strip("/").split("/")[-1]
    assert ada_id not in bob.content()  # nothing Bob is shown names Ada's sandbox

    # Ada's own dashboard: the page and its live socket.
    ada.goto(site.url + ada_dash)
    expect(ada.locator("#feed-status")).to_have_text("live (WebSocket)", timeout=15_000)
    ada.screenshot(path=artifacts / "ownership-ada.png")
    assert ada.request.get(f"{site.url}/api/{ada_id}/snapshot").ok

    # Bob, with his own session: every page, API, control and the socket say "no such".
    response = bob.goto(site.url + ada_dash)
    assert response.status == 404
    assert ada_id not in bob.content()
    bob.screenshot(path=artifacts / "ownership-bob-404.png")
    for api in APIS:
        resp = bob.request.get(f"{site.url}/api/{ada_id}/{api}")
        assert resp.status == 404, api
    bob.goto(site.url + bob_dash)
    expect(bob.locator("#feed-status")).to_have_text("live (WebSocket)", timeout=15_000)
    token = csrf(bob_ctx)
    for action, form in CONTROLS.items():
        resp = bob.request.post(f"{site.url}/api/{ada_id}/control/{action}", form=form,
                                headers={"X-CSRFToken": token, "Referer": site.url + bob_dash})
        assert resp.status == 404, action
    ws = site.url.replace("http://", "ws://")
    assert bob.evaluate(SOCKET, f"{ws}/ws/lab/{ada_id}/") == "closed"
    assert bob.evaluate(SOCKET, f"{ws}/ws/lab/{bob_dash.strip('/').split('/')[-1]}/") == \
        "message:first_paint"
    ada_sb = site.service().get(ada_id)
    assert ada_sb.alive("b1") and ada_sb.alive("proxy")  # Bob's kill and restart did nothing

    # Bob's own sandbox still refuses an address outside it.
    bob_id = bob_dash.strip("/").split("/")[-1]
    resp = bob.request.post(f"{site.url}/api/{bob_id}/control/add-backend",
                            form=CONTROLS["add-backend"],
                            headers={"X-CSRFToken": token, "Referer": site.url + bob_dash})
    assert resp.status == 422 and "not one of your sandbox's backends" in resp.json()["error"]

    # Their instructor may open Ada's dashboard (and sees it live).
    response = teacher.goto(site.url + ada_dash)
    assert response.status == 200
    expect(teacher.locator("#feed-status")).to_have_text("live (WebSocket)", timeout=15_000)

    # The shared sandbox at /: everyone watches, a learner cannot change it.
    response = bob.goto(site.url + "/")
    assert response.status == 200
    expect(bob.locator("#feed-status")).to_have_text("live (WebSocket)", timeout=15_000)
    resp = bob.request.post(f"{site.url}/api/shared/control/weight", form=CONTROLS["weight"],
                            headers={"X-CSRFToken": csrf(bob_ctx), "Referer": site.url + "/"})
    assert resp.status == 403 and "read-only" in resp.json()["error"]

    assert not errors, errors
    for ctx in (teacher_ctx, ada_ctx, bob_ctx):
        ctx.close()
