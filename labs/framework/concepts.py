"""The concepts a lab can declare (``concepts:`` in lab.yaml), for the lab list's filter.

Slugs are stable (they go into URLs: ``/labs/?concept=l4-vs-l7``); labels are what the
page shows. The list follows the course's concepts (issue 15), in its order, plus the
protocols the newer labs need (HTTP/2 and gRPC, UDP).
"""
from __future__ import annotations

CONCEPTS: dict[str, str] = {
    "roles": "What a balancer does (roles)",
    "l4-vs-l7": "Layer 4 vs layer 7",
    "round-robin": "Round robin",
    "weighted": "Weighted round robin and canaries",
    "least-connections": "Least connections",
    "least-outstanding": "Least outstanding requests",
    "random-p2c": "Random and power of two choices",
    "ip-hash-nat": "IP hash behind NAT",
    "consistent-hashing": "Rehashing and consistent hashing",
    "mixed-durations": "Round robin with mixed request durations",
    "slow-server-p99": "A slow server and p99",
    "health-check-window": "Health-check window",
    "check-timeouts": "Aggressive check timeouts and cascades",
    "liveness-readiness": "Liveness vs readiness, shallow vs deep checks",
    "slow-start": "Grace period and slow start",
    "outlier-ejection": "Passive checks and outlier ejection",
    "stickiness": "Sticky sessions",
    "sessions-redis": "Sessions in Redis",
    "draining": "Draining and deploys",
    "idle-timeouts": "Idle timeouts and keep-alive",
    "tls": "TLS termination, passthrough, SNI",
    "errors-502-503-504": "502 vs 503 vs 504",
    "http2-grpc": "HTTP/2 and gRPC",
    "udp": "UDP flows",
    "balancer-ha": "Balancer high availability (active–active, active–passive)",
    "cross-zone": "Balancer nodes per zone and cross-zone balancing",
    "retries": "Retries, retry budgets and load shedding",
}


def label(slug: str) -> str:
    return CONCEPTS.get(slug, slug)
