"""Least response time: prefer the backend that has been answering fastest.

Each backend keeps an average of its response time (`backend.ewma_ms`, updated
by the data plane on every response, see BackendState.record_latency). The
score multiplies it by the work already queued there: score = latency *
(outstanding + 1), divided by the effective weight when weights differ; the
lowest score wins, ties rotate. Multiplying by (outstanding + 1) matters: on
latency alone every request would go to the one fast backend until it, too,
became slow.

The average forgets with time, not only with samples (as Envoy's and nginx's
do). A backend that was slow gets no traffic, so it produces no samples and
an average over samples would keep it slow forever, even after it recovered.
Here an average `age` seconds old is trusted with weight exp(-age /
decay_time) and the rest is the pool's average: an old verdict drifts back to
"like the others", and the backend is tried again. A backend with no response
for `probe_after` seconds (and nothing in flight) has its average forgotten
and is probed with one request, as is a backend with no sample yet: one
request, not a flood, and the fresh sample decides from then on.

When it is right: backends of uneven or changing speed (a noisy neighbour, a
cold cache). Failure mode: the average is of the past; a backend that just
became slow keeps its good score until enough slow samples arrive, and one
that failed fast (fast errors) looks excellent.
"""
from __future__ import annotations

import math

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

    def _age(self, backend, now: float) -> float | None:
        return None if backend.ewma_at is None else max(0.0, now - backend.ewma_at)

    def pick(self, ctx, eligible):
        weights = effective_weights(eligible, ctx.now)
        candidates = [b for b in eligible if b.name in weights]
        if not candidates:
            return None
        now = ctx.now
        decay = getattr(self.settings, "decay_time", 10.0)
        probe_after = getattr(self.settings, "probe_after", 10.0)
        ewma = {b.name: r3(b.ewma_ms) for b in candidates}
        untried = [b for b in candidates if b.ewma_ms == 0.0]
        ages = {b.name: self._age(b, now) for b in candidates}
        stale = [b for b in candidates if b.ewma_ms > 0.0 and ages[b.name] is not None
                 and ages[b.name] >= probe_after]
        probe = [b for b in untried + stale if b.outstanding == 0]
        if probe:
            chosen = self._rotate(probe)
            inputs = {"ewma_ms": ewma, "probe": chosen.name}
            if chosen in stale:
                # Its average is too old to be evidence: forget it, so the probe's
                # answer starts a new one instead of being outvoted by the past.
                chosen.ewma_ms = 0.0
            if untried:
                inputs["untried"] = [b.name for b in untried]
            if stale:
                inputs["stale"] = {b.name: r3(ages[b.name]) for b in stale}
            return Decision(chosen, inputs)
        # The pool's average, each backend weighted by how recent its average
        # is: a stale verdict drifts toward what the others do now.
        trust = {b.name: 1.0 if ages[b.name] is None else math.exp(-ages[b.name] / decay)
                 for b in candidates}
        sampled = [b for b in candidates if b.ewma_ms > 0.0]
        total = sum(trust[b.name] for b in sampled)
        if total > 0:
            prior = sum(trust[b.name] * b.ewma_ms for b in sampled) / total
        else:
            prior = sum(b.ewma_ms for b in sampled) / len(sampled) if sampled else 0.0
        uniform = len(set(weights.values())) == 1
        scores, decayed = {}, {}
        for b in candidates:
            age = ages[b.name]
            if b.ewma_ms == 0.0:
                latency = prior
            elif age is None or age == 0.0:
                latency = b.ewma_ms
            else:
                latency = trust[b.name] * b.ewma_ms + (1 - trust[b.name]) * prior
                if abs(latency - b.ewma_ms) >= 0.0005:
                    decayed[b.name] = r3(latency)
            score = latency * (b.outstanding + 1)
            scores[b.name] = score if uniform else score / weights[b.name]
        best = min(scores.values())
        chosen = self._rotate([b for b in candidates if scores[b.name] == best])
        inputs = {"ewma_ms": ewma, "scores": {n: r3(s) for n, s in scores.items()}}
        if decayed:
            inputs["decayed_ms"] = decayed
        if untried:
            inputs["untried"] = [b.name for b in untried]
        return Decision(chosen, inputs)
