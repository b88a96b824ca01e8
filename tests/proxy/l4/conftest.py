"""L4 fixtures: real proxy processes (the e2e `proxy_factory`), game backends, tiny servers.

- `games`: three toy backends in `--mode tcp` (g1, g2, g3: line-based game sessions).
- `pp_games`: two more that require a PROXY protocol header (`--proxy-protocol`).
- Helpers for byte-level backends the toy cannot play (an echo server, a server that
  answers only after the client's EOF) live in support.py.
"""
from __future__ import annotations

import pytest

from labs.backend.testing import start_backends
from tests.proxy.e2e.conftest import proxy_factory  # noqa: F401 - the shared fixture


@pytest.fixture(scope="session")
def games():
    handles = start_backends(["g1", "g2", "g3"], "--mode", "tcp")
    yield {h.name: h for h in handles}
    for h in handles:
        h.stop()


@pytest.fixture(scope="session")
def pp_games():
    handles = start_backends(["pp1", "pp2"], "--mode", "tcp", "--proxy-protocol")
    yield {h.name: h for h in handles}
    for h in handles:
        h.stop()


@pytest.fixture(autouse=True)
def _clear_game_faults(request):
    yield
    for fixture in ("games", "pp_games"):
        if fixture in request.fixturenames:
            for handle in request.getfixturevalue(fixture).values():
                if handle.alive:
                    try:
                        handle.clear_faults()
                    except OSError:
                        pass
