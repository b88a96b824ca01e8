"""Zone-aware routing: which backends a listener's pick is among (pure).

A listener may stand for one balancer node in one availability zone
(`listeners.NAME.zone`), and each backend runs in a zone (`backends[].zone`).
A pool's `cross_zone` says whether a node sends across zones:

- `cross_zone: true` (ALB's default, and this proxy's): every eligible
  backend, whatever its zone. Each node spreads over all backends, so the
  backends share the load evenly even when the zones hold different numbers of
  them - at the price of traffic between zones (slower, and billed in clouds).
- `cross_zone: false` (NLB's default): only the backends of the node's own
  zone. Traffic stays in the zone, but a zone with fewer backends gives each
  more load (two nodes with half the clients each, zone A with 1 backend and
  zone B with 4: A's backend takes half of all traffic). When the node's zone
  has no eligible backend at all, the pick falls back to every zone rather
  than fail (what an NLB does when a zone has no healthy target).

A backend without a zone serves every zone. A listener without a zone picks
among all backends (zones play no part).
"""
from __future__ import annotations


def zone_filter(eligible: list, listener_zone: str, cross_zone: bool) -> tuple[list, dict]:
    """(the backends this pick is among, the event's zone view with the reason)."""
    if cross_zone:
        zones = sorted({b.zone for b in eligible if b.zone is not None})
        return eligible, {
            "listener_zone": listener_zone, "cross_zone": True, "zones": zones,
            "fallback": False,
            "reason": f"cross_zone on: zone {listener_zone} sends to every zone"}
    local = [b for b in eligible if b.zone is None or b.zone == listener_zone]
    if local:
        return local, {
            "listener_zone": listener_zone, "cross_zone": False, "zones": [listener_zone],
            "fallback": False,
            "reason": f"cross_zone off: only zone {listener_zone}'s backends "
                      f"({len(local)} eligible)"}
    zones = sorted({b.zone for b in eligible if b.zone is not None})
    return eligible, {
        "listener_zone": listener_zone, "cross_zone": False, "zones": zones,
        "fallback": True,
        "reason": f"cross_zone off, but zone {listener_zone} has no eligible backend: "
                  f"falling back to every zone ({', '.join(zones)})"}
