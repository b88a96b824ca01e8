"""Sessions across real backend processes: memory sessions need stickiness, Redis ones do not."""

import pytest

from labs.backend.testing import free_port, start_backend, start_backends

from .conftest import REDIS_URL

pytestmark = pytest.mark.timeout(30)


def login(backend, user="alice"):
    r = backend.request("POST", f"/login?user={user}")
    assert r.status == 200, r
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("SESSIONID=") and "HttpOnly" in cookie and "Path=/" in cookie
    return r.json()["session_id"]


def profile(backend, sid):
    return backend.get("/profile", headers={"Cookie": f"theme=dark; SESSIONID={sid}"})


def test_memory_sessions_live_in_one_backend_only(backend):
    with start_backend("t2") as other:
        sid = login(backend)
        mine = profile(backend, sid)
        assert mine.status == 200
        assert mine.json() == {"backend": "t1", "user": "alice", "session_id": sid,
                               "created_by": "t1", "session_store": "memory"}
        assert backend.get("/me", headers={"Cookie": f"SESSIONID={sid}"}).status == 200
        theirs = profile(other, sid)
        assert theirs.status == 401
        assert theirs.json()["backend"] == "t2"
        assert "keeps sessions in its own memory" in theirs.json()["error"]
        assert backend.stats()["sessions"] >= 1 and other.stats()["sessions"] == 0


def test_profile_without_cookie_is_401(backend):
    r = backend.get("/profile")
    assert r.status == 401 and "POST /login?user=NAME" in r.json()["error"]


def test_login_validation_and_logout(backend):
    assert backend.request("POST", "/login").status == 400
    assert backend.request("POST", "/login?user=a%20b").status == 400
    r = backend.get("/login?user=alice")
    assert r.status == 405 and r.headers["Allow"] == "POST"
    sid = login(backend, "bob")
    r = backend.request("POST", "/logout", headers={"Cookie": f"SESSIONID={sid}"})
    assert r.json()["logged_out"] is True and "Max-Age=0" in r.headers["Set-Cookie"]
    assert profile(backend, sid).status == 401


def test_redis_sessions_work_on_any_backend(redis_prefix):
    args = ("--redis-url", REDIS_URL, "--redis-prefix", redis_prefix, "--session-ttl", "60")
    r1, r2 = start_backends(["r1", "r2"], *args)
    try:
        sid = login(r1)
        found = profile(r2, sid)
        assert found.status == 200
        assert found.json() == {"backend": "r2", "user": "alice", "session_id": sid,
                                "created_by": "r1", "session_store": "redis"}
        assert r2.stats()["sessions"] == 1 and r2.stats()["session_store"] == "redis"
        ready = r1.get("/health/ready")
        assert ready.status == 200 and ready.json()["checks"] == {"dependency": "ok", "redis": "ok"}
    finally:
        r1.stop()
        r2.stop()


def test_unreachable_redis_fails_readiness_and_logins():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with start_backend("nr", None, "127.0.0.1", "--redis-url", dead) as b:
        assert b.get("/health/live").status == 200
        ready = b.get("/health/ready")
        assert ready.status == 503 and "unreachable" in ready.json()["checks"]["redis"]
        r = b.request("POST", "/login?user=alice")
        assert r.status == 503 and "unreachable" in r.json()["error"]
        stats = b.stats()
        assert stats["sessions"] is None and "unreachable" in stats["sessions_error"]
