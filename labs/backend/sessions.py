"""Login sessions of a toy backend, in process memory or in Redis, behind one interface.

Theory of operation
-------------------
``POST /login`` creates a session with a random id; ``GET /profile`` looks it up by the
``SESSIONID`` cookie. Where sessions live is the lesson:

* ``MemorySessionStore`` keeps them in a dict inside this one process. Another backend
  behind the same load balancer has never heard of the id, so without sticky sessions a
  logged-in user is "logged out" whenever the balancer picks a different backend.
* ``RedisSessionStore`` keeps them in Redis under ``lblab:session:<id>`` with a TTL, so
  every backend pointed at the same Redis finds every session; stickiness is not needed.

Both expire sessions after ``ttl_s``; the memory store is given its clock so expiry is
testable without waiting. A Redis that cannot be reached raises ``StoreUnavailable`` with
the reason, which the app turns into a 503 and readiness reports.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

REDIS_PREFIX = "lblab:session:"
DEFAULT_TTL_S = 3600


@dataclass(frozen=True)
class Session:
    id: str
    user: str
    created_by: str      # name of the backend that created it
    created_at: float    # wall-clock seconds since the epoch

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Session":
        data = json.loads(raw)
        return cls(id=data["id"], user=data["user"], created_by=data["created_by"],
                   created_at=data["created_at"])


class StoreUnavailable(RuntimeError):
    """The session store cannot be reached (Redis down, wrong URL...)."""


class SessionStore(Protocol):
    kind: str

    async def create(self, user: str, created_by: str) -> Session: ...
    async def get(self, session_id: str) -> Session | None: ...
    async def delete(self, session_id: str) -> bool: ...
    async def count(self) -> int: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


class MemorySessionStore:
    """Sessions in a dict of this process: lost on restart, invisible to other backends."""

    kind = "memory"

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.ttl_s = ttl_s
        self.clock = clock
        self.wall_clock = wall_clock
        self._sessions: dict[str, tuple[Session, float]] = {}

    async def create(self, user: str, created_by: str) -> Session:
        session = Session(new_session_id(), user, created_by, self.wall_clock())
        self._sessions[session.id] = (session, self.clock() + self.ttl_s)
        return session

    async def get(self, session_id: str) -> Session | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        session, expires = entry
        if self.clock() >= expires:
            del self._sessions[session_id]
            return None
        return session

    async def delete(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    async def count(self) -> int:
        now = self.clock()
        for sid in [sid for sid, (_, exp) in self._sessions.items() if now >= exp]:
            del self._sessions[sid]
        return len(self._sessions)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._sessions.clear()


class RedisSessionStore:
    """Sessions in Redis (``<prefix><id>`` -> JSON, with a TTL), shared by every backend."""

    kind = "redis"

    def __init__(self, url: str, ttl_s: float = DEFAULT_TTL_S, prefix: str = REDIS_PREFIX,
                 timeout_s: float = 1.0, wall_clock: Callable[[], float] = time.time):
        import redis.asyncio  # imported only when Redis is configured: it is not small

        self.url = url
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.wall_clock = wall_clock
        self._errors = (redis.asyncio.RedisError, OSError)
        self._redis = redis.asyncio.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
        )

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"redis at {self.url} unreachable: {exc or type(exc).__name__}")

    async def create(self, user: str, created_by: str) -> Session:
        session = Session(new_session_id(), user, created_by, self.wall_clock())
        try:
            await self._redis.set(self.prefix + session.id, session.to_json(),
                                  ex=max(1, int(self.ttl_s)))
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        return session

    async def get(self, session_id: str) -> Session | None:
        try:
            raw = await self._redis.get(self.prefix + session_id)
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        if raw is None:
            return None
        try:
            return Session.from_json(raw)
        except (ValueError, KeyError, TypeError):
            # Someone else's value under our prefix: treat as no session rather than crash.
            return None

    async def delete(self, session_id: str) -> bool:
        try:
            return bool(await self._redis.delete(self.prefix + session_id))
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def count(self) -> int:
        """Sessions under the prefix in Redis: shared, so every backend reports the same."""
        try:
            n = 0
            async for _ in self._redis.scan_iter(match=self.prefix + "*", count=500):
                n += 1
            return n
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        await self._redis.aclose()
