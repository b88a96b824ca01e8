"""Power of two choices: draw two backends at random, send to the less loaded.

`settings.choices` backends (2 by default) are drawn without replacement with
the injected random generator, and the one with the fewest outstanding
requests wins (per unit of effective weight when weights differ, as in
least_outstanding_requests). Mitzenmacher showed that comparing just two
random picks already cuts the worst backend's load exponentially compared with
one random pick, without scanning every backend.

When it is right: large pools and many independent proxies. Taking the global
minimum makes every proxy (with slightly stale counts) pile onto the same
"least loaded" backend at once (herding); two random draws spread them, and
the cost per pick is constant. Failure mode: with very few backends it is
close to random, and a backend that is never drawn is never compared; a heavily
loaded backend is still chosen whenever it is drawn against a worse one.
"""
from __future__ import annotations

from proxy.balancers.base import Balancer, Decision, register
from proxy.balancers.scoring import effective_weights, load_of, r3, report_inputs


@register
class PowerOfTwoChoices(Balancer):
    name = "power_of_two_choices"
    summary = "Draw two backends at random, take the one with fewer requests in flight."
    weighted = True

    def pick(self, ctx, eligible):
        weights = effective_weights(eligible, ctx.now)
        candidates = [b for b in eligible if b.name in weights]
        if not candidates:
            return None
        k = min(self.settings.choices, len(candidates))
        draws = self.rng.sample(candidates, k)
        counts = {b.name: load_of(self.settings, b, "outstanding") for b in draws}
        drawn = {b.name: weights[b.name] for b in draws}
        report = report_inputs(self.settings, draws, ctx.now)
        if len(set(drawn.values())) == 1:
            chosen = min(draws, key=lambda b: counts[b.name])  # first draw wins a tie
            return Decision(chosen, {"draws": [b.name for b in draws], "counts": counts,
                                     **report})
        scores = {b.name: (counts[b.name] + 1) / drawn[b.name] for b in draws}
        chosen = min(draws, key=lambda b: scores[b.name])
        return Decision(chosen, {"draws": [b.name for b in draws], "counts": counts,
                                 "scores": {n: r3(s) for n, s in scores.items()}, **report})
