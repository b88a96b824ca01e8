"""Session stickiness: send a client back to the backend it used before.

A balancer spreads requests; some applications keep state in one backend's
memory (a login session, a shopping cart) and break when the next request
lands elsewhere. Stickiness sits in front of the balancer
(`PoolRuntime.choose`): `find` says which backend the request is stuck to (and
why, or why not), the pool serves it there when that backend is eligible, and
otherwise asks the balancer and calls `stick` to record the new choice.

Three modes, each a trade-off:

- cookie: the proxy inserts its own cookie naming the backend, with an expiry
  and an HMAC-SHA256 signature (`b2.1767225600.3f9a...`). No state in the proxy,
  survives proxy restarts when `secret` is configured, works across many
  proxies sharing the secret. The signature means a client cannot choose its
  backend by editing the cookie: a bad signature is ignored and re-picked.
  Needs HTTP; clients that refuse cookies are never stuck.
- app_cookie: follow the application's own session cookie (`cookie:
  SESSIONID`). The proxy learns "SESSIONID=abc -> b2" from the Set-Cookie
  headers of b2's responses (`observe_response`) and looks the request's
  cookie up in a table. Nothing is added to the client, but the table lives in
  one proxy's memory: a restart or a second proxy forgets every session.
- source_ip: a stick table client address -> backend. Works at L4 and needs no
  cookie, but every client behind one NAT or corporate proxy shares one
  backend, and a client whose address changes (mobile) loses its session.

Tables hold at most `table_size` entries (the least recently used is evicted
first) and an entry expires `ttl` after it was last stored or matched, as
HAProxy's stick tables do. Pure logic: time comes from the injected clocks.
"""
from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time
from collections import OrderedDict
from email.utils import parsedate_to_datetime
from typing import Callable, Mapping

from proxy.balancers.base import PickContext
from proxy.model import BackendState

Clock = Callable[[], float]

# Hex characters of the HMAC-SHA256 kept in the cookie: 128 bits is far beyond
# guessing and keeps the value short enough to read.
SIGNATURE_HEX = 32
# How an app_cookie table entry got there (see AppCookieSticky.find).
LEARNED = "set-cookie"
PINNED = "pinned"


def _short(value: str, keep: int = 12) -> str:
    """Session ids in events: enough to tell them apart, not the whole secret."""
    return value if len(value) <= keep else value[:keep] + "..."


class StickTable:
    """key -> backend name with an idle expiry, bounded, oldest (least recently used) evicted."""

    def __init__(self, capacity: int, ttl: float, clock: Clock):
        self.capacity = capacity
        self.ttl = ttl
        self.clock = clock
        # key -> (backend name, expiry, origin: how the entry got there)
        self._entries: OrderedDict[str, tuple[str, float, str]] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> tuple[str | None, bool]:
        """(backend name or None, whether an entry was found but had expired).

        A match refreshes the entry: it now expires ttl from now.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None, False
        now = self.clock()
        name, expires, origin = entry
        if expires <= now:
            del self._entries[key]
            return None, True
        self._entries[key] = (name, now + self.ttl, origin)
        self._entries.move_to_end(key)
        return name, False

    def origin(self, key: str) -> str:
        """How the entry for `key` was stored (the `origin` given to put), or ""."""
        entry = self._entries.get(key)
        return entry[2] if entry is not None else ""

    def put(self, key: str, name: str, origin: str = "") -> None:
        now = self.clock()
        self._entries[key] = (name, now + self.ttl, origin)
        self._entries.move_to_end(key)
        # Entries are in order of last use, hence of expiry: purge expired from the front.
        while self._entries:
            first = next(iter(self._entries.values()))
            if first[1] > now:
                break
            self._entries.popitem(last=False)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    def entries(self) -> dict[str, dict]:
        """A view for the admin API: key -> {"backend", "expires_in"}."""
        now = self.clock()
        return {k: {"backend": n, "expires_in": round(e - now, 3), **({"origin": o} if o else {})}
                for k, (n, e, o) in self._entries.items() if e > now}


class StickyLayer:
    mode: str = ""

    def __init__(self, settings, pool_name: str, clock: Clock):
        self.settings = settings
        self.pool_name = pool_name
        self.clock = clock

    def find(self, ctx: PickContext,
             backends: Mapping[str, BackendState]) -> tuple[BackendState | None, str]:
        raise NotImplementedError

    def stick(self, ctx: PickContext, backend: BackendState) -> str | None:
        """Record the balancer's choice; a Set-Cookie header value when one must be sent."""
        return None

    def stick_note(self, ctx: PickContext, backend: BackendState) -> str | None:
        """What `stick` recorded, for the routing event (None: nothing worth saying)."""
        return None

    def observe_response(self, backend: BackendState,
                         set_cookie_values: list[str] | list[bytes]) -> str | None:
        """Look at a response's Set-Cookie values (only app_cookie learns from them).

        Returns a short note for the event ("learned SESSIONID=abc -> b2") or None.
        """
        return None

    def snapshot(self) -> dict:
        return {"mode": self.mode}


class CookieSticky(StickyLayer):
    """The proxy inserts a signed cookie `name.expiry.signature` naming the backend."""

    mode = "cookie"

    def __init__(self, settings, pool_name: str, clock: Clock, wall_clock: Clock):
        super().__init__(settings, pool_name, clock)
        # Expiry stamps travel to the client and between proxies: wall-clock time,
        # not the monotonic clock the rest of the proxy runs on.
        self.wall_clock = wall_clock
        if settings.secret:
            self._secret = settings.secret.encode("utf-8")
        else:
            # Per process: cookies become invalid (and are re-picked) after a restart.
            self._secret = secrets.token_bytes(32)

    def signature(self, backend_name: str, expires: int) -> str:
        # The pool name is signed too: a cookie of another pool does not validate here.
        message = f"{self.pool_name}|{backend_name}|{expires}".encode("utf-8")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:SIGNATURE_HEX]

    def value_for(self, backend_name: str, expires: int) -> str:
        return f"{backend_name}.{expires}.{self.signature(backend_name, expires)}"

    def find(self, ctx, backends):
        raw = ctx.cookies.get(self.settings.cookie) if ctx.cookies else None
        if raw is None:
            return None, "no sticky cookie"
        # Backend names may contain dots; expiry and signature cannot.
        parts = raw.rsplit(".", 2)
        if len(parts) != 3 or not parts[0] or not (parts[1].isascii() and parts[1].isdigit()):
            return None, "cookie malformed: ignored"
        name, expires_text, signature = parts
        expected = self.signature(name, int(expires_text))
        if not hmac.compare_digest(signature.encode("ascii", "replace"), expected.encode("ascii")):
            return None, "cookie signature invalid: ignored (forged or from another secret)"
        if int(expires_text) <= self.wall_clock():
            return None, "cookie expired"
        backend = backends.get(name)
        if backend is None:
            return None, f"cookie names {name}, no longer in this pool"
        return backend, f"cookie names {name}"

    def stick(self, ctx, backend):
        ttl = max(1, int(self.settings.ttl))
        expires = int(self.wall_clock()) + ttl
        return (f"{self.settings.cookie}={self.value_for(backend.name, expires)}; "
                + "; ".join(cookie_attributes(self.settings, ttl, tls=ctx.tls)))

    def snapshot(self):
        return {"mode": self.mode, "cookie": self.settings.cookie,
                "secret": "configured" if self.settings.secret else "random per process"}


def cookie_attributes(settings, max_age: int, tls: bool) -> list[str]:
    """The attributes of the inserted cookie, from the pool's sticky settings.

    Secure (`secure: auto`) on listeners that terminate TLS: there the browser
    only ever sends the cookie back encrypted; on a plain-HTTP listener a
    Secure cookie would never come back, so auto leaves it off (`always` forces
    it, behind a TLS-terminating front proxy). HttpOnly keeps page scripts from
    reading which backend a client is pinned to; SameSite=Lax keeps other sites
    from riding the pin. Both are on by default, each can be turned off.
    """
    out = [f"Path={settings.path}", f"Max-Age={max_age}"]
    if settings.domain:
        out.append(f"Domain={settings.domain}")
    if settings.secure == "always" or (settings.secure == "auto" and tls):
        out.append("Secure")
    if settings.http_only:
        out.append("HttpOnly")
    if settings.same_site != "off":
        out.append(f"SameSite={settings.same_site}")
    return out


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """'SESSIONID=abc; Path=/; Max-Age=0' -> ('SESSIONID', 'abc', {'max-age': '0', ...})."""
    first, *rest = header.split(";")
    name, _, value = first.partition("=")
    attrs = {}
    for item in rest:
        key, _, val = item.strip().partition("=")
        if key:
            attrs[key.lower()] = val.strip()
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return name.strip(), value, attrs


class AppCookieSticky(StickyLayer):
    """Follow the application's own session cookie, learned from its Set-Cookie headers."""

    mode = "app_cookie"

    def __init__(self, settings, pool_name: str, clock: Clock, wall_clock: Clock):
        super().__init__(settings, pool_name, clock)
        self.wall_clock = wall_clock
        self.table = StickTable(settings.table_size, settings.ttl, clock)

    def find(self, ctx, backends):
        cookie = self.settings.cookie
        value = ctx.cookies.get(cookie) if ctx.cookies else None
        if value is None:
            return None, f"no {cookie} cookie"
        name, expired = self.table.get(value)
        shown = f"{cookie}={_short(value)}"
        if expired:
            return None, "table entry expired"
        if name is None:
            return None, f"{shown} not in the table (no backend has set it yet)"
        backend = backends.get(name)
        if backend is None:
            self.table.discard(value)
            return None, f"{shown} -> {name}, no longer in this pool"
        # Say where the entry came from: a backend's Set-Cookie, or the proxy
        # itself pinning a session it had never seen a backend issue.
        if self.table.origin(value) == LEARNED:
            return backend, f"{shown} -> {name} (learned from its Set-Cookie)"
        return backend, (f"{shown} -> {name} (pinned by the proxy when it picked {name} for "
                         "this session; no backend has sent it in a Set-Cookie)")

    def stick(self, ctx, backend):
        # A session the table does not know (or whose backend is gone) now lives
        # where it was re-picked; the backend may also reissue the cookie. The
        # entry is marked as pinned, not learned, until a Set-Cookie confirms it.
        value = ctx.cookies.get(self.settings.cookie) if ctx.cookies else None
        if value:
            self.table.put(value, backend.name, origin=PINNED)
        return None

    def stick_note(self, ctx, backend):
        value = ctx.cookies.get(self.settings.cookie) if ctx.cookies else None
        if not value:
            return None
        return (f"{self.settings.cookie}={_short(value)} pinned to {backend.name} by the proxy "
                "(not learned from a Set-Cookie)")

    def _deletes(self, value: str, attrs: dict[str, str]) -> bool:
        if not value:
            return True
        max_age = attrs.get("max-age")
        if max_age is not None:
            try:
                return int(max_age) <= 0
            except ValueError:
                return False
        expires = attrs.get("expires")
        if expires:
            try:
                return parsedate_to_datetime(expires).timestamp() <= self.wall_clock()
            except (TypeError, ValueError):
                return False
        return False

    def observe_response(self, backend, set_cookie_values):
        learned = None
        for header in set_cookie_values:
            if isinstance(header, (bytes, bytearray)):
                # proxy/http1 keeps header values as bytes; HTTP headers are latin-1.
                header = bytes(header).decode("latin-1")
            name, value, attrs = parse_set_cookie(header)
            if name != self.settings.cookie:
                continue
            if self._deletes(value, attrs):
                # Logout: the application cleared its cookie.
                if value:
                    self.table.discard(value)
                learned = f"{name} cleared by {backend.name}"
            else:
                self.table.put(value, backend.name, origin=LEARNED)
                learned = f"learned {name}={_short(value)} -> {backend.name}"
        return learned

    def snapshot(self):
        return {"mode": self.mode, "cookie": self.settings.cookie, "entries": len(self.table),
                "capacity": self.table.capacity, "evictions": self.table.evictions}


class SourceIpSticky(StickyLayer):
    """A stick table keyed by client address."""

    mode = "source_ip"

    def __init__(self, settings, pool_name: str, clock: Clock):
        super().__init__(settings, pool_name, clock)
        self.table = StickTable(settings.table_size, settings.ttl, clock)

    def find(self, ctx, backends):
        ip = ctx.client_ip
        name, expired = self.table.get(ip)
        if expired:
            return None, "table entry expired"
        if name is None:
            return None, f"no stick table entry for {ip}"
        backend = backends.get(name)
        if backend is None:
            self.table.discard(ip)
            return None, f"stick table: {ip} -> {name}, no longer in this pool"
        return backend, f"stick table: {ip} -> {name}"

    def stick(self, ctx, backend):
        self.table.put(ctx.client_ip, backend.name)
        return None

    def snapshot(self):
        return {"mode": self.mode, "entries": len(self.table),
                "capacity": self.table.capacity, "evictions": self.table.evictions}


def create(settings, pool_name: str, clock: Clock | None = None,
           rng: random.Random | None = None, wall_clock: Clock | None = None) -> StickyLayer:
    """The sticky layer for a pool's StickyConfig.

    `clock` times table entries (the proxy's monotonic clock is right); cookie
    expiry stamps use `wall_clock` (time.time unless injected) because they
    leave the process. `rng` is accepted for symmetry with the balancers; the
    per-process cookie secret comes from `secrets`, never from a seedable PRNG.
    """
    clock = clock or time.monotonic
    wall_clock = wall_clock or time.time
    if settings.mode == "cookie":
        return CookieSticky(settings, pool_name, clock, wall_clock)
    if settings.mode == "app_cookie":
        return AppCookieSticky(settings, pool_name, clock, wall_clock)
    if settings.mode == "source_ip":
        return SourceIpSticky(settings, pool_name, clock)
    raise ValueError(f"unknown sticky mode {settings.mode!r}; choose cookie, app_cookie or source_ip")
