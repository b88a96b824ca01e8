"""A Docker engine of the test's own, with LBLab's images built in it (docker/engine.py).

The engine's data root is kept between runs, so the images (and the layers they are built
from) are a cache: the first run on a machine builds the base images from Debian's packages
(a few minutes), later runs rebuild only what changed (seconds; docker/images.py keys the
wheelhouse by the runtime requirements, the engine's layer cache the rest by the Dockerfile
and the files copied). The engine itself is started and stopped by every module that uses it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from docker import images  # noqa: E402
from docker.engine import Engine  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    eng = Engine()
    eng.start()
    try:
        before = eng.inventory()
        assert not any(before.values()), f"the test engine holds leftovers: {before}"
        images.build_all(quiet=True, docker_host=eng.host)
        yield eng
    finally:
        eng.stop()
