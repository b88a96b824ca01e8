"""The dashboard says which sandbox part died and lets its owner restart it.

A real supervised sandbox (proxy + b1, b2) shown at / by daphne in public mode, where the
shared sandbox may be changed by staff only. A superuser (the operator) and an anonymous
visitor each open the dashboard in their own browser context. b2 is killed by its pid
(SIGKILL, as a crash would); both pages must say b2 died, only the operator's page offers
Restart, and after the click b2 runs again and the proxy sends requests to it.
"""
from __future__ import annotations

import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import FAST_HEALTH
from tests.e2e.test_workshop import run
from tests.explainer.parts import free_port, spawn, stop, wait_http, wait_until

PASSWORD = "Operator-pass-5127"


class Site:
    def __init__(self, url: str, state_dir: Path):
        self.url, self.state_dir = url, state_dir

    def sandbox(self):
        from labs.sandbox import SandboxService
        return SandboxService(state_dir=self.state_dir).get("shared")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from labs.sandbox import SandboxService
    from labs.sandbox.topology import default_config

    base = tmp_path_factory.mktemp("restart-parts")
    state_dir, logs = base / "state", base / "logs"
    logs.mkdir()
    env = {"LBLAB_STATE_DIR": str(state_dir), "LBLAB_VAR_DIR": str(base / "var"),
           "LBLAB_SANDBOX": "shared", "LBLAB_ADMIN_URL": "", "LBLAB_EMBEDDED_BRIDGE": "1",
           "DEBUG": "0", "DJANGO_SETTINGS_MODULE": "lblab.settings", "REDIS_URL": "",
           "LBLAB_DEFAULT_SANDBOX_WRITERS": "staff"}
    svc = SandboxService(state_dir=state_dir)
    config = default_config(["b1", "b2"])
    config["pools"]["web"]["health"] = FAST_HEALTH
    svc.create("shared", backends=["b1", "b2"], config=config, timeout=20)
    daphne = None
    try:
        run([sys.executable, "manage.py", "migrate", "--noinput"], env)
        run([sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", "op",
             "--email", "op@lab.test"], {**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD})
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


def served_by(proxy_url: str) -> str:
    with urllib.request.urlopen(proxy_url + "/", timeout=3) as resp:
        return resp.headers["X-Backend"]


def test_the_owner_sees_what_died_and_restarts_it(browser, site, artifacts):
    errors: list[str] = []

    def open_dashboard():
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        return context, page

    op_ctx, op = open_dashboard()
    op.goto(site.url + "/workshops/login/")
    op.fill("input[name=username]", "op")
    op.fill("input[name=password]", PASSWORD)
    op.click("button[type=submit]")
    op.goto(site.url + "/")
    visitor_ctx, visitor = open_dashboard()
    visitor.goto(site.url + "/")

    for page in (op, visitor):
        expect(page.locator("#parts-panel")).to_be_visible(timeout=10_000)
        expect(page.locator("li.part[data-part=b2]")).to_contain_text("b2: running")

    sandbox = site.sandbox()
    os.kill(sandbox.pids["b2"], signal.SIGKILL)

    for page in (op, visitor):
        b2 = page.locator("li.part[data-part=b2]")
        expect(b2).to_contain_text("b2: dead", timeout=10_000)
        expect(b2).to_contain_text(f"backend b2 died: not running (pid {sandbox.pids['b2']} "
                                   "is gone)")
        expect(b2).to_contain_text("noticed dead at")
        expect(page.locator("li.part[data-part=proxy]")).to_contain_text("proxy: running")
    expect(visitor.locator("li.part[data-part=b2] button")).to_have_count(0)
    expect(visitor.locator("li.part[data-part=b2]")).to_contain_text(
        "Only the sandbox owner can restart it")
    op.screenshot(path=str(artifacts / "restart-parts-dead.png"), full_page=True)

    op.get_by_role("button", name="Restart backend b2").click()
    expect(op.locator("#parts-result")).to_contain_text("Restarted b2", timeout=20_000)
    expect(op.locator("li.part[data-part=b2]")).to_contain_text("b2: running")
    expect(op.locator("li.part[data-part=b2] button")).to_have_count(0)
    expect(visitor.locator("li.part[data-part=b2]")).to_contain_text("b2: running",
                                                                     timeout=10_000)
    restarted = site.sandbox()
    assert restarted.pids["b2"] != sandbox.pids["b2"]
    # Serving again: the health checker takes it back and the proxy sends it requests.
    wait_until(lambda: "b2" in {served_by(restarted.proxy_url) for _ in range(6)}, 15,
               interval=0.3, what="a request served by the restarted b2")
    assert errors == []
    op_ctx.close()
    visitor_ctx.close()
