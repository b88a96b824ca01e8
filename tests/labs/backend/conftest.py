import uuid

import pytest

from labs.backend.testing import start_backend

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def shared_backend():
    """One real backend process (memory sessions) shared by the end-to-end tests."""
    with start_backend("t1") as backend:
        yield backend


@pytest.fixture
def backend(shared_backend):
    """The shared backend with no faults set, before and after the test."""
    assert shared_backend.alive, shared_backend.output()
    shared_backend.clear_faults()
    yield shared_backend
    if shared_backend.alive:
        shared_backend.clear_faults()


@pytest.fixture
def redis_prefix():
    """A key prefix of our own in the real Redis, deleted afterwards."""
    import redis

    prefix = f"lblab:test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    client.ping()
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
        client.close()
