"""Least response time: prefer the backend that has been answering fastest.

Each backend keeps an EWMA of its response time (`backend.ewma_ms`, updated
by the data plane on every response). The score multiplies it by the work
already queued there: score = ewma_ms * (outstanding + 1), divided by the
effective weight when weights differ; the lowest score wins, ties rotate.
Multiplying by (outstanding + 1) matters: on latency alone every request would
go to the one fast backend until it, too, became slow.

A backend with no sample yet (new, or just added) has no latency to compare.
It is tried first, but only while nothing is in flight to it, so one request
probes it rather than a flood; until its first response it is scored with the
average latency of the others.

When it is right: backends of uneven or changing speed (a noisy neighbour, a
cold cache). Failure mode: the average is of the past; a backend that just
became slow keeps its good score until enough slow samples arrive, and one
that failed fast (fast errors) looks excellent.
"""
from __future__ import annotations

from proxy.balancers.base import Balancer, Decision, register
from proxy.balancers.scoring import effective_weights, r3


@register
class LeastResponseTime(Balancer):
    name = "least_response_time"
    summary = "The backend with the lowest response-time average times its requests in flight."
    weighted = True

    def rebuild(self, backends):
        super().rebuild(backends)
        self._tie = getattr(self, "_tie", 0)

    def _rotate(self, tied):
        if len(tied) == 1:
            return tied[0]
        chosen = tied[self._tie % len(tied)]
        self._tie += 1
        return chosen

    def pick(self, ctx, eligible):
        weights = effective_weights(eligible, ctx.now)
        candidates = [b for b in eligible if b.name in weights]
        if not candidates:
            return None
        ewma = {b.name: r3(b.ewma_ms) for b in candidates}
        untried = [b for b in candidates if b.ewma_ms == 0.0]
        probe = [b for b in untried if b.outstanding == 0]
        if probe:
            chosen = self._rotate(probe)
            return Decision(chosen, {"ewma_ms": ewma, "untried": [b.name for b in untried],
                                     "probe": chosen.name})
        sampled = [b.ewma_ms for b in candidates if b.ewma_ms > 0.0]
        prior = sum(sampled) / len(sampled) if sampled else 0.0
        uniform = len(set(weights.values())) == 1
        scores = {}
        for b in candidates:
            latency = b.ewma_ms if b.ewma_ms > 0.0 else prior
            score = latency * (b.outstanding + 1)
            scores[b.name] = score if uniform else score / weights[b.name]
        best = min(scores.values())
        chosen = self._rotate([b for b in candidates if scores[b.name] == best])
        inputs = {"ewma_ms": ewma, "scores": {n: r3(s) for n, s in scores.items()}}
        if untried:
            inputs["untried"] = [b.name for b in untried]
        return Decision(chosen, inputs)
