"""Random: every eligible backend equally likely, each pick independent.

(The module is not called random.py so that it can never shadow the
standard library module of that name.)

Uses the injected random generator, so a seeded run replays exactly. Over many
requests the spread is even (law of large numbers) with no shared state at
all, which is why many independent proxies can use it without coordination.

When it is right: many proxies, many backends, cheap uniform requests.
Failure mode: over a short window it is lumpy (three requests in a row to one
backend is common), and it ignores both weight and load.
"""
from __future__ import annotations

from proxy.balancers.base import Balancer, Decision, register


@register
class Random(Balancer):
    name = "random"
    summary = "A backend chosen uniformly at random for every request."

    def pick(self, ctx, eligible):
        if not eligible:
            return None
        index = self.rng.randrange(len(eligible))
        return Decision(eligible[index], {"index": index, "of": len(eligible)})
