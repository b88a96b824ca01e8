"""UDP fixtures: toy UDP backends (their control API on a free port) and proxies."""
from __future__ import annotations

import pytest

from labs.backend.testing import start_backends
from tests.proxy.e2e.conftest import proxy_factory  # noqa: F401 - shared fixture


@pytest.fixture(scope="module")
def udp_backends():
    handles = start_backends(["u1", "u2", "u3"], "--mode", "udp")
    yield {h.name: h for h in handles}
    for h in handles:
        h.stop()


@pytest.fixture(autouse=True)
def _clear(request):
    yield
    if "udp_backends" in request.fixturenames:
        for handle in request.getfixturevalue("udp_backends").values():
            if handle.alive:
                handle.clear_faults()
