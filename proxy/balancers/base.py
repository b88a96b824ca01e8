"""The balancer interface: a small contract every algorithm implements.

`pick(ctx, eligible)` chooses one backend among the *eligible* ones (the
caller filters out unhealthy, draining, ejected backends: algorithms never see
them) and returns a `Decision` holding the backend and the algorithm's inputs,
so every routing event can say *why* (the round-robin index, the counts it
compared, the hash key and ring position...).

Optional hooks: `acquire(backend)` when a request/connection is sent to the
chosen backend and `release(backend)` when it ends, for algorithms that keep
their own bookkeeping (bounded loads); `rebuild(all_backends)` when the pool's
membership or weights change (rings, tables).

Each class declares what it needs from the traffic (`needs_http`, which may
depend on its settings), so config can refuse an algorithm that needs HTTP
on a TCP listener. Time and randomness are injected (`clock`, `rng`) so tests
and replays are deterministic.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping, Sequence

from proxy.model import BackendState

Clock = Callable[[], float]


@dataclass(slots=True)
class PickContext:
    """What a balancer may look at for one request or connection."""

    client_ip: str
    now: float = 0.0
    # HTTP-only fields; None/empty on L4 listeners.
    method: str | None = None
    path: str | None = None  # path with query string, as received
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    cookies: Mapping[str, str] = field(default_factory=dict)
    sni: str | None = None
    tls: bool = False  # the client connection is TLS the proxy terminated
    zone: str | None = None  # the listener's zone (the balancer node), for zone-aware routing


@dataclass(slots=True)
class Decision:
    backend: BackendState
    # The algorithm's inputs, JSON-serialisable: {"index": 3}, {"counts": {...}}
    inputs: dict = field(default_factory=dict)


class Balancer:
    """Base class; subclasses set `name` and implement `pick`."""

    name: ClassVar[str] = ""
    # Short learner-facing description, shown by the site.
    summary: ClassVar[str] = ""
    weighted: ClassVar[bool] = False

    def __init__(self, settings, backends: Sequence[BackendState],
                 rng: random.Random | None = None, clock: Clock | None = None):
        # `settings` is proxy.config.BalancerConfig (algorithm-specific knobs).
        self.settings = settings
        self.rng = rng or random.Random()
        self.clock = clock or (lambda: 0.0)
        self.rebuild(backends)

    @classmethod
    def needs_http(cls, settings) -> bool:
        """True when the algorithm reads HTTP (headers, cookies, URI)."""
        return False

    def rebuild(self, backends: Sequence[BackendState]) -> None:
        """Called with every backend of the pool (eligible or not) on membership change."""
        self.backends = list(backends)

    def pick(self, ctx: PickContext, eligible: Sequence[BackendState]) -> Decision | None:
        raise NotImplementedError

    def acquire(self, backend: BackendState) -> None:
        """A request (or connection) to `backend` begins: for balancers that count."""

    def release(self, backend: BackendState) -> None:
        """...and ends."""

    # True when a subclass overrides acquire or release: the data plane calls
    # them only then (two calls per request saved for all the others).
    counts: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.counts = (cls.acquire is not Balancer.acquire
                      or cls.release is not Balancer.release)


REGISTRY: dict[str, type[Balancer]] = {}


def register(cls: type[Balancer]) -> type[Balancer]:
    """Class decorator: make an algorithm available by its `name` in config."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    REGISTRY[cls.name] = cls
    return cls
