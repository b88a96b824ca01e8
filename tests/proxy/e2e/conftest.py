"""End-to-end fixtures: real toy backends and real proxy processes on 127.0.0.0/8.

- `backends`: three toy backends (b1, b2, b3) for the whole session, on free
  ports; their faults are cleared after every test.
- `proxy_factory(config_dict)`: a ready `python -m proxy --config FILE` (see
  support.ProxyProcess), stopped at the end of the module.

Helpers (clients, config builders) live in support.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labs.backend.testing import start_backends
from tests.proxy.e2e.support import ProxyProcess


@pytest.fixture(scope="session")
def backends():
    handles = start_backends(["b1", "b2", "b3"])
    yield {h.name: h for h in handles}
    for h in handles:
        h.stop()


@pytest.fixture(autouse=True)
def _clear_faults(request):
    yield
    if "backends" in request.fixturenames:
        for handle in request.getfixturevalue("backends").values():
            if handle.alive:
                try:
                    handle.clear_faults()
                except OSError:
                    pass


@pytest.fixture(scope="module")
def proxy_factory(tmp_path_factory):
    """start(config_dict) -> a ready ProxyProcess; all stopped at the end of the module."""
    started: list[ProxyProcess] = []
    directory = tmp_path_factory.mktemp("proxy")

    def start(config: dict, name: str = "proxy") -> ProxyProcess:
        n = len(started)
        access_log = directory / f"{name}-{n}.access.log"
        config = dict(config)
        config.setdefault("access_log", str(access_log))
        path = directory / f"{name}-{n}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        proc = ProxyProcess(path, Path(config["access_log"]))
        started.append(proc)
        return proc.wait_ready()

    yield start
    for proc in started:
        proc.stop()


