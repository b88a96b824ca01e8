"""Browser tests: Debian's Chromium driven by Playwright (its own browser download is not used).

The whole stack is real and on free loopback ports: a sandbox (toy backends + proxy)
from labs.sandbox.SandboxService, the bridge (`manage.py bridge`) and daphne, sharing
a Redis channel layer, as a workshop runs them.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.explainer.parts import REPO, free_port, spawn, stop, wait_http, wait_until

# Django's live_server + Playwright's sync API share a thread with an event loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def e2e_redis(slot: int) -> str:
    """A Redis database of this test process's own for the channel layer.

    `./lab test` runs the browser tests on two xdist workers: two stacks in one database would
    see each other's groups (both call their sandbox "e2e"). Databases 12-15 are the browser
    tests': slot 0 the shared stack below, slot 1 the workshop site (test_workshop.py)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0)
    assert index < 2 and slot < 2, "the browser tests have Redis databases 12-15: two workers"
    return f"redis://127.0.0.1:6379/{12 + 2 * index + slot}"


E2E_REDIS = e2e_redis(0)
FAST_HEALTH = {"type": "http", "path": "/health", "interval": "200ms", "timeout": "150ms",
               "unhealthy_threshold": 2, "healthy_threshold": 2}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium",
            "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1440, "height": 1000}}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _subscribers(admin_url: str) -> int:
    with urllib.request.urlopen(f"{admin_url}/state", timeout=3) as resp:
        return json.load(resp).get("subscribers", 0)


class Stack:
    def __init__(self, sandbox, web_url: str, state_dir: Path, logs: Path):
        self.sandbox = sandbox
        self.web_url = web_url
        self.state_dir = state_dir
        self.logs = logs


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    assert redis_up(), "Redis must answer on 127.0.0.1:6379 (the e2e stack uses it)"
    from labs.sandbox import SandboxService
    from labs.sandbox.topology import default_config

    base = tmp_path_factory.mktemp("e2e")
    state_dir, logs = base / "state", base / "logs"
    logs.mkdir()
    config = default_config(["b1", "b2", "b3"])
    config["pools"]["web"]["health"] = FAST_HEALTH
    config["pools"]["web"]["deregistration_delay"] = "1s"
    svc = SandboxService(state_dir=state_dir)
    sandbox = svc.create("e2e", backends=["b1", "b2", "b3"], config=config, timeout=20)
    env = {"REDIS_URL": E2E_REDIS, "LBLAB_STATE_DIR": str(state_dir), "LBLAB_SANDBOX": "e2e",
           "LBLAB_ADMIN_URL": "", "LBLAB_EMBEDDED_BRIDGE": "0", "DEBUG": "1",
           "LBLAB_VAR_DIR": str(base / "var"), "DJANGO_SETTINGS_MODULE": "lblab.settings"}
    port = free_port()
    procs = []
    try:
        procs.append(spawn([sys.executable, "manage.py", "bridge", "--admin-url",
                            sandbox.admin_url, "--sandbox", "e2e"], logs / "bridge.log", env=env))
        daphne = spawn([str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p",
                        str(port), "lblab.asgi:application"], logs / "daphne.log", env=env)
        procs.append(daphne)
        wait_http(f"http://127.0.0.1:{port}/", proc=daphne, log=logs / "daphne.log")
        # Until the bridge reads the event stream, a request sent now would reach no page.
        wait_until(lambda: _subscribers(sandbox.admin_url) >= 1, timeout=60,
                   what="the bridge subscribed to the proxy's events")
        yield Stack(sandbox, f"http://127.0.0.1:{port}", state_dir, logs)
    finally:
        for proc in reversed(procs):
            stop(proc)
        svc.stop("e2e", grace=3)
