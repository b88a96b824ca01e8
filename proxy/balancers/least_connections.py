"""Least connections: send the new connection to the backend holding fewest.

Reads `backend.active_connections`, kept by the data plane: behind a tcp
listener, the client connections relayed to each backend; behind an http
listener, the backend connections carrying a request (or a WebSocket tunnel)
right now, idle pooled connections excluded. At L7 that is close to
least_outstanding_requests (as nginx least_conn and HAProxy leastconn in HTTP
mode), except that a request still connecting is not counted yet. When
effective weights differ the score is
(connections + 1) / effective_weight, so a weight-2 backend is allowed about
twice the connections; with equal weights it is the raw count. Ties rotate
round-robin among the tied backends rather than always taking the first, so a
quiet pool (all at 0) still spreads.

When it is right: long-lived connections of unequal length (WebSockets,
database sessions, TCP relays), where counting them is counting load.
Failure mode: at L4 a connection is not a unit of work: one keep-alive
connection may carry thousands of cheap requests or one expensive one; and a
backend that fails fast (closes connections at once) looks idle and attracts
everything, a "black hole" that health checks and outlier detection must catch.
"""
from __future__ import annotations

from proxy.balancers.base import register
from proxy.balancers.scoring import LeastBase


@register
class LeastConnections(LeastBase):
    name = "least_connections"
    summary = "The backend with the fewest connections busy with work (per unit of weight)."
    counter = "active_connections"
    label = "counts"
