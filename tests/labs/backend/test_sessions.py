"""Session stores: memory with a fake clock, Redis against the real server on 127.0.0.1:6379."""

import pytest

from labs.backend.sessions import MemorySessionStore, RedisSessionStore, StoreUnavailable
from labs.backend.testing import free_port

from .conftest import REDIS_URL


class FakeClock:
    def __init__(self):
        self.now = 50.0

    def __call__(self):
        return self.now


@pytest.mark.asyncio
async def test_memory_store_create_get_delete_count():
    store = MemorySessionStore(ttl_s=10)
    s = await store.create("alice", "b1")
    assert (s.user, s.created_by) == ("alice", "b1") and len(s.id) >= 16
    assert await store.get(s.id) == s
    assert await store.get("nope") is None
    other = await store.create("bob", "b1")
    assert other.id != s.id
    assert await store.count() == 2
    assert await store.delete(s.id) is True
    assert await store.delete(s.id) is False
    assert await store.count() == 1


@pytest.mark.asyncio
async def test_memory_sessions_expire():
    clock = FakeClock()
    store = MemorySessionStore(ttl_s=10, clock=clock)
    s = await store.create("alice", "b1")
    clock.now += 9.9
    assert await store.get(s.id) == s
    clock.now += 0.1
    assert await store.get(s.id) is None
    await store.create("bob", "b1")
    clock.now += 11
    assert await store.count() == 0


@pytest.mark.asyncio
async def test_memory_stores_do_not_share():
    a, b = MemorySessionStore(), MemorySessionStore()
    s = await a.create("alice", "b1")
    assert await b.get(s.id) is None


@pytest.mark.asyncio
async def test_redis_store_is_shared_between_backends(redis_prefix):
    import redis

    one = RedisSessionStore(REDIS_URL, ttl_s=60, prefix=redis_prefix)
    two = RedisSessionStore(REDIS_URL, ttl_s=60, prefix=redis_prefix)
    try:
        await one.ping()
        s = await one.create("alice", "b1")
        found = await two.get(s.id)
        assert found == s
        assert await two.count() == 1
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        try:
            assert 0 < client.ttl(redis_prefix + s.id) <= 60
        finally:
            client.close()
        assert await two.delete(s.id) is True
        assert await one.get(s.id) is None
        assert await one.count() == 0
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_unreachable_redis_raises_store_unavailable():
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = RedisSessionStore(url, timeout_s=0.5)
    try:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.create("alice", "b1")
        with pytest.raises(StoreUnavailable):
            await store.get("x")
    finally:
        await store.close()
