"""Fixtures for the explainer: a real lab (toy backends + proxy) and the site pointed at it."""
from __future__ import annotations

import pytest

from tests.explainer.parts import free_port, start_lab, wait_until


@pytest.fixture
def lab(tmp_path):
    """Two toy backends behind a real proxy (health checks every 200 ms, 2 strikes)."""
    lab = start_lab(tmp_path, backends=2)
    try:
        import json
        import urllib.request

        def all_healthy():
            with urllib.request.urlopen(f"{lab.admin_url}/state", timeout=2) as resp:
                state = json.load(resp)
            return all(b["health"] == "healthy" for b in state["pools"]["web"]["backends"])

        wait_until(all_healthy, timeout=10, what="both backends healthy")
        yield lab
    finally:
        lab.stop_all()


@pytest.fixture
def site_on(settings):
    """Point the site's sandbox "default" at a given lab (LBLAB_ADMIN_URL mode)."""
    def point(lab=None, admin_url: str | None = None, embedded: bool = False):
        settings.LBLAB_SANDBOX = "default"
        settings.LBLAB_ADMIN_URL = admin_url or lab.admin_url
        settings.LBLAB_PROXY_URL = lab.proxy_url if lab else ""
        settings.LBLAB_EMBEDDED_BRIDGE = embedded
        settings.LBLAB_ADMIN_TIMEOUT = 2.0
        return "default"
    return point


@pytest.fixture
def dead_admin_url():
    """An admin URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
