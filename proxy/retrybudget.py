"""Retry budgets (Envoy's `retry_budget`): retries capped as a share of the pool's
active requests, besides the per-request count (`pools.NAME.retries`).

Theory of operation
-------------------
A per-request retry count alone multiplies load exactly when a pool is in
trouble: with `retries: 2`, every request to a failing pool becomes up to
three, and the healthy backends left get the extra. A budget bounds the
retries in flight across the whole pool: at most `percent` of the requests
active in the pool may be retrying at once, but never fewer than
`min_concurrent` (so a quiet pool can still retry a request or two).

A request counts as active from its pick to its end, and as retrying from its
first retry to its end. When a retry is due and the budget is spent, the
request is answered with the error of the attempt that failed, and its event
says so (`retry_budget.allowed: false` with the numbers), so a learner can
tell "the proxy gave up to protect the pool" from "there was nothing to retry".

Pure counters and a pure rule; the data plane calls them.
"""
from __future__ import annotations


class RetryBudget:
    """Active requests and retries in flight of one pool (kept across reloads)."""

    __slots__ = ("active_requests", "active_retries", "skipped")

    def __init__(self) -> None:
        self.active_requests = 0
        self.active_retries = 0
        self.skipped = 0  # retries refused by the budget since start

    def check(self, percent: float, minimum: int) -> dict:
        """May one more request start retrying now? The decision and its inputs."""
        return decide(self.active_requests, self.active_retries, percent, minimum)

    def snapshot(self, percent: float | None, minimum: int | None) -> dict:
        out = {"active_requests": self.active_requests,
               "active_retries": self.active_retries, "skipped": self.skipped,
               "percent": percent, "min_concurrent": minimum}
        if percent is not None:
            out["limit"] = limit(self.active_requests, percent, minimum or 0)
        return out


def limit(active_requests: int, percent: float, minimum: int) -> int:
    """Retries allowed in flight: percent of the active requests, at least minimum."""
    return max(minimum, int(active_requests * percent / 100.0))


def decide(active_requests: int, active_retries: int, percent: float, minimum: int) -> dict:
    cap = limit(active_requests, percent, minimum)
    allowed = active_retries < cap
    if allowed:
        reason = (f"{active_retries} retries in flight, below the budget of {cap} "
                  f"(max({minimum}, {percent:g}% of {active_requests} active requests))")
    else:
        reason = (f"retry skipped: {active_retries} retries already in flight, the budget "
                  f"is {cap} (max({minimum}, {percent:g}% of {active_requests} active "
                  "requests); retry_budget")
    return {"allowed": allowed, "active_requests": active_requests,
            "active_retries": active_retries, "limit": cap, "reason": reason}
