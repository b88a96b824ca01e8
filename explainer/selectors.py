"""Read-only questions about a proxy's state and events (no I/O, no side effects)."""
from __future__ import annotations

import logging

log = logging.getLogger("explainer.selectors")

# Shown when the proxy package cannot be imported (the site does not need it to run).
FALLBACK_ALGORITHMS = [
    "round_robin", "weighted_round_robin", "random", "weighted_random", "least_connections",
    "least_outstanding_requests", "least_response_time", "power_of_two_choices", "ip_hash",
    "consistent_hash", "consistent_hash_bounded", "maglev",
]


def algorithms() -> list[str]:
    """Algorithm names the proxy registers (the proxy still validates every change)."""
    try:
        from proxy.balancers import REGISTRY
    except Exception as exc:  # the proxy is optional for the site; say why the list is static
        log.info("using the built-in algorithm list: proxy.balancers not importable (%s)", exc)
        return list(FALLBACK_ALGORITHMS)
    return sorted(REGISTRY)


def backend_events(events: list[dict], pool: str | None, backend: str) -> list[dict]:
    """Events about one backend, oldest first."""
    chosen = [e for e in events if e.get("backend") == backend
              and (pool is None or e.get("pool") in (None, pool))]
    return sorted(chosen, key=lambda e: e.get("ts", 0))
