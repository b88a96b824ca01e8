"""Shared builders for lifecycle tests: a real Runtime from plain data, a fake clock."""
from __future__ import annotations

import random
from types import SimpleNamespace

from proxy.config import parse_config
from proxy.events import EventBus, HealthProbe, StateChange
from proxy.runtime import Runtime


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def pool_data(backends, **settings) -> dict:
    """backends: list of (name, port) or dicts."""
    items = []
    for b in backends:
        if isinstance(b, dict):
            items.append(b)
        else:
            name, port = b
            items.append({"name": name, "address": f"127.0.0.1:{port}"})
    return {"backends": items, **settings}


def make_runtime(pools: dict, clock=None, seed: int = 7) -> Runtime:
    config = parse_config({"listeners": {}, "pools": pools})
    kwargs = {"rng": random.Random(seed)}
    if clock is not None:
        kwargs["clock"] = clock
    return Runtime(config, bus=EventBus(), **kwargs)


def fake_server(runtime: Runtime, **extra) -> SimpleNamespace:
    return SimpleNamespace(runtime=runtime, bus=runtime.bus, config=runtime.config, **extra)


class Recorder:
    """A bus sink keeping every event, with filters for the tests."""

    def __init__(self, bus: EventBus):
        self.events = []
        bus.add_sink(self.events.append)

    def of(self, cls, **match):
        return [e for e in self.events if isinstance(e, cls)
                and all(getattr(e, k) == v for k, v in match.items())]

    def changes(self, **match):
        return self.of(StateChange, **match)

    def probes(self, **match):
        return self.of(HealthProbe, **match)
