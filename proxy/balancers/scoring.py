"""Shared pieces of the weighted and least-* balancers.

Weights are read through `backend.effective_weight(now)`, so slow start ramps
a freshly healthy backend from 1% of its weight up to all of it. A backend
whose weight is 0 takes no new traffic from weighted algorithms (as in HAProxy
and nginx); when every eligible backend weighs 0 they return no backend.
"""
from __future__ import annotations

from typing import Sequence

from proxy.balancers.base import Balancer, Decision, PickContext
from proxy.model import BackendState


def effective_weights(eligible: Sequence[BackendState], now: float) -> dict[str, float]:
    """Name -> effective weight, leaving out backends that weigh 0 right now."""
    weights = {}
    for b in eligible:
        w = b.effective_weight(now)
        if w > 0:
            weights[b.name] = w
    return weights


def load_of(settings, backend: BackendState, counter: str) -> float:
    """The count a least-* or power-of-two balancer compares: its own live ``counter``, or
    (``balancer.load: reported``) the last load report, while the backend has one."""
    if getattr(settings, "load", "local") == "reported" and backend.reported_load is not None:
        return backend.reported_load
    return getattr(backend, counter)


def report_inputs(settings, candidates: Sequence[BackendState], now: float) -> dict:
    """What a decision says about the report it read: {} for live local counts."""
    if getattr(settings, "load", "local") != "reported":
        return {}
    ages = [now - b.reported_at for b in candidates if b.reported_at is not None]
    return {"load": "reported", "report_age_s": r3(max(ages)) if ages else None}


def r3(x: float) -> float | int:
    """Round for events; whole numbers print as ints."""
    x = round(x, 3)
    return int(x) if x == int(x) else x


class LeastBase(Balancer):
    """Least-<counter>: the smallest counter wins; ties rotate round-robin.

    With equal effective weights the score is the raw counter. When weights
    differ the score is (counter + 1) / effective_weight: a backend of weight 3
    is "as busy" as one of weight 1 when it holds three times the load, and the
    +1 makes an idle backend in slow start (weight 0.05) still score worse than
    an idle full-weight one, so the ramp is respected even at zero load.
    """

    weighted = True
    counter: str = ""  # attribute of BackendState compared
    label: str = "counts"

    def rebuild(self, backends):
        super().rebuild(backends)
        self._tie = getattr(self, "_tie", 0)

    def pick(self, ctx: PickContext, eligible: Sequence[BackendState]) -> Decision | None:
        weights = effective_weights(eligible, ctx.now)
        candidates = [b for b in eligible if b.name in weights]
        if not candidates:
            return None
        counts = {b.name: load_of(self.settings, b, self.counter) for b in candidates}
        uniform = len(set(weights.values())) == 1
        if uniform:
            scores = counts
        else:
            scores = {n: (c + 1) / weights[n] for n, c in counts.items()}
        best = min(scores.values())
        tied = [b for b in candidates if scores[b.name] == best]
        chosen = tied[self._tie % len(tied)] if len(tied) > 1 else tied[0]
        if len(tied) > 1:
            self._tie += 1
        inputs: dict = {self.label: counts, **report_inputs(self.settings, candidates, ctx.now)}
        if not uniform:
            inputs["weights"] = {n: r3(w) for n, w in weights.items()}
            inputs["scores"] = {n: r3(s) for n, s in scores.items()}
        if len(tied) > 1:
            inputs["tied"] = [b.name for b in tied]
        return Decision(chosen, inputs)
