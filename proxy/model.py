"""Runtime state of backends: what the balancers read and the data plane updates.

A backend's *observed health* (initial, healthy, unhealthy) is kept apart from
its *intent* (active, draining, maintenance), as HAProxy does: a draining
backend can be perfectly healthy, and an unhealthy one is still meant to be in
the pool. Only a backend that is both meant to serve and not known to be down
is *eligible*; balancers never see the others.

A backend that joins a pool with active health checks (`requires_check`)
is not eligible while its health is still *initial*: it must first pass
`healthy_threshold` consecutive checks, as an ALB target does after
registration. Without active checks nothing will ever move it out of
*initial*, so there it is eligible (the proxy trusts it until traffic says
otherwise: passive health). The health manager sets `requires_check` (for
every backend of a checked pool at startup and for backends added later; a
backend already serving when checks are switched on keeps serving until its
checks give a verdict).

Counters are plain attributes because the data plane touches them on every
request; no locks are needed inside one asyncio loop.
"""
from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field


class Health(str, enum.Enum):
    INITIAL = "initial"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class Intent(str, enum.Enum):
    ACTIVE = "active"
    DRAINING = "draining"
    MAINTENANCE = "maintenance"


# EWMA smoothing for least_response_time: weight of the newest sample when
# samples come close together. After a quiet spell the newest sample weighs
# more (1 - exp(-gap / ewma_decay)), so the average is one over time, not over
# a count of samples: an old average does not outweigh what the backend does now.
EWMA_ALPHA = 0.3
EWMA_DECAY = 10.0


@dataclass(eq=False, slots=True)
class BackendState:
    """One backend of one pool, alive across config reloads while its address stays."""

    name: str
    host: str
    port: int
    pool: str
    weight: int = 1
    health: Health = Health.INITIAL
    intent: Intent = Intent.ACTIVE
    health_reason: str = "not checked yet"
    # True when this backend must pass active checks before it serves: then
    # "initial" means "not proven yet" and is not eligible.
    requires_check: bool = False
    # When the backend last became healthy (for slow start), on the injected clock.
    healthy_since: float | None = None
    # Slow start window in seconds (0 = off); set from the pool config.
    slow_start: float = 0.0
    # Passive health (outlier detection) can eject a backend until this time.
    ejected_until: float = 0.0
    # Requests (L7) or connections (L4) it takes at once; None = no limit
    # (backends[].max_connections, else the pool's max_connections_per_backend).
    max_connections: int | None = None
    backup: bool = False  # serves only while the primaries are below backup_threshold
    zone: str | None = None  # its availability zone (None: serves every zone)
    # Live counters.
    active_connections: int = 0  # L4: relayed client connections; L7: ones busy with a request
    outstanding: int = 0  # requests in flight
    ewma_ms: float = 0.0  # smoothed response time
    ewma_at: float | None = None  # when the last sample arrived (the proxy's clock)
    ewma_decay: float = EWMA_DECAY  # time constant in seconds (pool's balancer.decay_time)
    requests: int = 0
    failures: int = 0  # 5xx and gateway failures seen by the proxy
    # The last load report pushed from outside (PUT /pools/P/load): requests in flight on
    # this backend across every balancer (an average over the reporter's interval, so it
    # may be fractional), as of reported_at (the proxy's clock). Read by
    # balancer.load: reported; None until a report arrives.
    reported_load: float | None = None
    reported_at: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def is_eligible(self, now: float) -> bool:
        """Meant to serve, not known down, not ejected by outlier detection.

        When it must pass active checks first, "initial" is not enough.
        """
        health = self.health
        return (
            self.intent is Intent.ACTIVE
            and health is not Health.UNHEALTHY
            and not (health is Health.INITIAL and self.requires_check)
            and self.ejected_until <= now
        )

    def effective_weight(self, now: float) -> float:
        """Configured weight, ramped linearly during slow start (never below 1% of it)."""
        if self.slow_start <= 0 or self.healthy_since is None:
            return float(self.weight)
        elapsed = now - self.healthy_since
        if elapsed >= self.slow_start:
            return float(self.weight)
        return max(self.weight * 0.01, self.weight * elapsed / self.slow_start)

    def request_started(self) -> None:
        self.outstanding += 1
        self.requests += 1

    def request_finished(self, latency_s: float, failed: bool,
                         now: float | None = None) -> None:
        self.outstanding -= 1
        if failed:
            self.failures += 1
        self.record_latency(latency_s * 1000.0, now)

    def record_latency(self, ms: float, now: float | None = None) -> None:
        """Fold one response (or connect) time into the time-weighted average."""
        now = time.monotonic() if now is None else now
        if self.ewma_ms == 0.0 or self.ewma_at is None:
            alpha = 1.0 if self.ewma_ms == 0.0 else EWMA_ALPHA
        else:
            gap = max(0.0, now - self.ewma_at)
            alpha = max(EWMA_ALPHA, 1.0 - math.exp(-gap / self.ewma_decay))
        self.ewma_ms = alpha * ms + (1 - alpha) * self.ewma_ms
        self.ewma_at = now

    def snapshot(self, now: float) -> dict:
        """The view used by events and GET /state."""
        return {
            "name": self.name,
            "address": self.address,
            "weight": self.weight,
            "effective_weight": round(self.effective_weight(now), 3),
            "health": self.health.value,
            "health_reason": self.health_reason,
            "intent": self.intent.value,
            "requires_check": self.requires_check,
            "eligible": self.is_eligible(now),
            "ejected": self.ejected_until > now,
            "active_connections": self.active_connections,
            "outstanding": self.outstanding,
            "max_connections": self.max_connections,
            "backup": self.backup,
            "zone": self.zone,
            "ewma_ms": round(self.ewma_ms, 3),
            "requests": self.requests,
            "failures": self.failures,
        }
