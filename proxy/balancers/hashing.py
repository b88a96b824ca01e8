"""Shared pieces of the hash-based balancers: a stable hash, the hash key, rings.

Why not Python's `hash()`: it is salted per process (PYTHONHASHSEED), so the
same client would land on a different backend after every restart, and two
proxies in front of the same backends would disagree. A keyed-by-nothing
BLAKE2b digest is stable everywhere and mixes well (CRC32 clusters similar
inputs such as 127.0.0.1 .. 127.0.0.9, which would make rings lumpy).

The hash key comes from `settings.hash_key`: the client address (works at L4
and L7), an HTTP header, a cookie, or the URI (path with query). When the
request does not carry the configured header/cookie, the key falls back to
the client address, and the decision says so: silently hashing on "" would
send every such request to one backend.
"""
from __future__ import annotations

import bisect
from hashlib import blake2b
from typing import Sequence

from proxy.balancers.base import Balancer, PickContext
from proxy.model import BackendState

HTTP_SOURCES = ("header", "cookie", "uri")


def stable_hash(text: str, salt: bytes = b"") -> int:
    """A 64-bit hash that is the same in every process and on every machine."""
    return int.from_bytes(blake2b(text.encode("utf-8"), digest_size=8, salt=salt).digest(), "big")


def hash_key(settings, ctx: PickContext) -> tuple[str, str, str | None]:
    """(key, label for the event, fallback note or None) for one request."""
    source = settings.hash_key.source
    name = settings.hash_key.name
    if source == "header":
        value = ctx.headers.get(name.lower()) if ctx.headers else None
        if value is not None:
            return value, f"header {name}={value}", None
        missing = f"header {name} missing"
    elif source == "cookie":
        value = ctx.cookies.get(name) if ctx.cookies else None
        if value is not None:
            return value, f"cookie {name}={value}", None
        missing = f"cookie {name} missing"
    elif source == "uri":
        if ctx.path is not None:
            return ctx.path, f"uri={ctx.path}", None
        missing = "no URI (not HTTP)"
    else:
        return ctx.client_ip, f"client_ip={ctx.client_ip}", None
    return (ctx.client_ip, f"client_ip={ctx.client_ip}",
            f"{missing}: hashed client_ip instead")


class HashBalancer(Balancer):
    """Base of the hash algorithms: the HTTP requirement follows the key source."""

    @classmethod
    def needs_http(cls, settings) -> bool:
        return settings.hash_key.source in HTTP_SOURCES

    def _key_inputs(self, ctx: PickContext) -> tuple[int, dict]:
        key, label, fallback = hash_key(self.settings, ctx)
        h = stable_hash(key)
        inputs = {"hash_key": label, "hash": h}
        if fallback:
            inputs["fallback"] = fallback
        return h, inputs


class Ring:
    """A consistent-hash ring: sorted points, each owned by a backend name.

    Each backend gets `virtual_nodes` points scaled by its weight relative to
    the heaviest backend (the heaviest gets exactly `virtual_nodes`, a backend
    of half its weight half as many, at least one). Weight-0 backends get none.
    Weights here are the configured ones: ramping them for slow start would
    move keys around every second.
    """

    def __init__(self, backends: Sequence[BackendState], virtual_nodes: int):
        weighted = [b for b in backends if b.weight > 0]
        top = max((b.weight for b in weighted), default=1)
        pairs = []
        self.points_per_backend: dict[str, int] = {}
        for b in weighted:
            count = max(1, round(virtual_nodes * b.weight / top))
            self.points_per_backend[b.name] = count
            pairs.extend((stable_hash(f"{b.name}#{i}"), b.name) for i in range(count))
        pairs.sort()
        self.points = [p for p, _ in pairs]
        self.owners = [n for _, n in pairs]
        self.names = frozenset(self.points_per_backend)

    def __len__(self) -> int:
        return len(self.points)

    def start(self, h: int) -> int:
        """Index of the first point at or after h (wrapping to 0)."""
        i = bisect.bisect_left(self.points, h)
        return 0 if i == len(self.points) else i

    def walk(self, h: int):
        """Yield (point index, owner name) clockwise from h, each distinct owner once."""
        n = len(self.points)
        if not n:
            return
        seen: set[str] = set()
        i = self.start(h)
        for step in range(n):
            j = (i + step) % n
            owner = self.owners[j]
            if owner not in seen:
                seen.add(owner)
                yield j, owner
                if len(seen) == len(self.names):
                    return
