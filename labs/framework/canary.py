"""A canary rollout with automatic rollback: the decisions, without sockets or clocks.

Theory of operation
-------------------
A new version runs on one backend of the pool (the canary). The rollout gives it a
growing share of the traffic, one step at a time (1 % -> 5 % -> 25 %), by setting its
weight against the sum of the stable backends' weights:

    weight = round(share x stable / (1 - share))      (share 5 %, stable 300 -> 16)

Between steps it watches the canary's own requests in a sliding window (the last
``window_s`` lab seconds) and rolls back - the canary's weight to 0, for good - as soon
as the window holds at least ``min_requests`` requests and their error rate is above
``max_error_rate`` or their p99 above ``max_p99_ms`` (0: latency is not judged). A
window with fewer requests is inconclusive: a canary at 1 % sees few requests, and one
failure among two is no evidence. This is what Argo Rollouts and Flagger do with their
analysis runs (a metric, a threshold, a minimum of samples), reduced to its core.

``Rollout.tick(t, requests)`` is called with the lab second and the canary's requests
seen so far (``(t, status, latency_ms)``); it returns the actions due now, each with
the numbers that decided it and a sentence saying why. The lab runner does the I/O (the
admin API's weight verb) and writes each action into the run's timeline.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class CanaryError(ValueError):
    """A rollout or rule the lab cannot use; the message says what to change."""


@dataclass(frozen=True)
class Rule:
    """When to roll back (the learner's ``lab.canary`` settings)."""

    max_error_rate: float = 1.0  # above this share of 5xx in the window: roll back
    max_p99_ms: float = 0.0  # above this p99 in the window: roll back (0: not judged)
    min_requests: int = 5  # fewer requests in the window: no verdict yet
    window_s: float = 0.5  # lab seconds of the canary's requests judged at once

    @classmethod
    def from_settings(cls, settings: dict) -> "Rule":
        known = {"max_error_rate", "max_p99_ms", "min_requests", "window_s"}
        errors = [f"lab.canary.{k}: unknown; known: {', '.join(sorted(known))}"
                  for k in settings if k not in known]
        rule = cls(**{k: v for k, v in settings.items() if k in known})
        if not 0 <= rule.max_error_rate <= 1:
            errors.append(f"lab.canary.max_error_rate must be from 0 to 1, got "
                          f"{rule.max_error_rate}")
        if rule.max_p99_ms < 0:
            errors.append(f"lab.canary.max_p99_ms must be 0 (off) or more, got {rule.max_p99_ms}")
        if not 1 <= int(rule.min_requests) <= 10_000:
            errors.append(f"lab.canary.min_requests must be from 1 to 10000, got "
                          f"{rule.min_requests}")
        if not 0.05 <= rule.window_s <= 60:
            errors.append(f"lab.canary.window_s must be from 0.05 to 60 lab seconds, got "
                          f"{rule.window_s}")
        if errors:
            raise CanaryError("; ".join(errors))
        return rule


@dataclass(frozen=True)
class Plan:
    """The rollout the lab runs: the canary's share at each step, and the steps' length."""

    canary: str
    pool: str
    steps: tuple[float, ...] = (1.0, 5.0, 25.0)  # percent of the traffic
    step_s: float = 1.5  # lab seconds per step
    start_s: float = 0.0

    def __post_init__(self):
        if not self.steps or any(not 0 < s < 100 for s in self.steps):
            raise CanaryError(f"canary steps must be percentages between 0 and 100, got "
                              f"{list(self.steps)}")
        if list(self.steps) != sorted(self.steps):
            raise CanaryError(f"canary steps must grow, got {list(self.steps)}")
        if self.step_s <= 0:
            raise CanaryError(f"canary step_s must be above 0, got {self.step_s}")


def weight_for(percent: float, stable_weight: int) -> int:
    """The canary's weight that gives it ``percent`` of the traffic beside ``stable_weight``
    (the sum of the other backends' weights); at least 1, at most the admin API's 1000."""
    if stable_weight <= 0:
        raise CanaryError("the pool needs at least one stable backend with a weight above 0")
    share = percent / 100.0
    return max(1, min(1000, round(share * stable_weight / (1 - share))))


def judge(window: list[tuple[float, int, float]], rule: Rule) -> dict:
    """The verdict on one window of canary requests: healthy, inconclusive or failing."""
    n = len(window)
    errors = sum(1 for _, status, _ in window if status >= 500 or status == 0)
    rate = errors / n if n else 0.0
    p99 = _p99([lat for _, _, lat in window]) if n else None
    out = {"requests": n, "errors": errors, "error_rate": round(rate, 3),
           "p99_ms": None if p99 is None else round(p99, 1)}
    if n < rule.min_requests:
        return {**out, "verdict": "inconclusive",
                "why": f"{n} canary request{'' if n == 1 else 's'} in the last "
                       f"{rule.window_s:g} s, fewer than "
                       f"min_requests {rule.min_requests}: no verdict yet"}
    if rate > rule.max_error_rate:
        return {**out, "verdict": "failing",
                "why": f"error rate {rate:.0%} ({errors} of {n} canary requests in the last "
                       f"{rule.window_s:g} s) is above max_error_rate {rule.max_error_rate:.0%}"}
    if rule.max_p99_ms and p99 is not None and p99 > rule.max_p99_ms:
        return {**out, "verdict": "failing",
                "why": f"p99 {p99:.0f} ms over {n} canary requests in the last "
                       f"{rule.window_s:g} s is above max_p99_ms {rule.max_p99_ms:g}"}
    limits = f"max_error_rate {rule.max_error_rate:.0%}" + (
        f", max_p99_ms {rule.max_p99_ms:g}" if rule.max_p99_ms else ", p99 not judged")
    return {**out, "verdict": "healthy",
            "why": f"error rate {rate:.0%} and p99 {p99:.0f} ms over {n} canary requests "
                   f"are within {limits}"}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(0.99 * len(ordered) + 0.5))))
    return ordered[rank - 1]


@dataclass
class Rollout:
    """The rollout's state: which step it is at, and whether it was rolled back."""

    plan: Plan
    rule: Rule
    stable_weight: int
    step: int = -1  # index into plan.steps; -1: not started
    rolled_back: bool = False
    actions: list[dict] = field(default_factory=list)  # everything decided, in order

    def tick(self, t: float, requests: list[tuple[float, int, float]]) -> list[dict]:
        """The actions due at lab second ``t`` given the canary's requests so far."""
        if self.rolled_back:
            return []
        due: list[dict] = []
        if self.step >= 0:
            window = [r for r in requests if t - self.rule.window_s <= r[0] <= t]
            verdict = judge(window, self.rule)
            if verdict["verdict"] == "failing":
                self.rolled_back = True
                due.append(self._action(t, "rollback", 0, verdict,
                                        f"rollback at {self.percent:g}%: {verdict['why']}; "
                                        f"the canary's weight goes to 0"))
                return due
        wanted = min(len(self.plan.steps) - 1,
                     int((t - self.plan.start_s) // self.plan.step_s)) if \
            t >= self.plan.start_s else -1
        while self.step < wanted:
            self.step += 1
            percent = self.plan.steps[self.step]
            weight = weight_for(percent, self.stable_weight)
            window = [r for r in requests if t - self.rule.window_s <= r[0] <= t]
            verdict = judge(window, self.rule)
            why = (f"step {self.step + 1} of {len(self.plan.steps)}: {percent:g}% of the "
                   f"traffic (weight {weight} beside {self.stable_weight})")
            if self.step:
                why += f"; the last window: {verdict['why']}"
            due.append(self._action(t, "step", weight, verdict, why, percent=percent))
        return due

    @property
    def percent(self) -> float:
        return self.plan.steps[self.step] if self.step >= 0 else 0.0

    def _action(self, t: float, what: str, weight: int, verdict: dict, why: str,
                percent: float | None = None) -> dict:
        action = {"t": round(t, 3), "action": what, "backend": self.plan.canary,
                  "pool": self.plan.pool, "weight": weight,
                  "percent": self.percent if percent is None else percent,
                  "window": {k: verdict[k] for k in ("requests", "errors", "error_rate",
                                                     "p99_ms", "verdict")},
                  "why": why}
        self.actions.append(action)
        return action
