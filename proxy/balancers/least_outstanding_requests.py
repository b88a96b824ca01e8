"""Least outstanding requests: send the request to the backend with fewest in flight.

Reads `backend.outstanding`, requests sent and not yet answered. That number
rises by itself on a backend that slows down, so this algorithm reacts to
latency without measuring it (Envoy's LEAST_REQUEST, AWS ALB's "least
outstanding requests"). When effective weights differ the score is
(outstanding + 1) / effective_weight; with equal weights the raw count. Ties
rotate round-robin among the tied backends.

When it is right: HTTP traffic with requests of uneven cost; the usual best
default for L7. Failure mode: a backend that answers errors instantly has
nothing outstanding and wins every tie (the black hole again), and with many
proxies each sees only its own requests (which is why power_of_two_choices
exists).
"""
from __future__ import annotations

from proxy.balancers.base import register
from proxy.balancers.scoring import LeastBase


@register
class LeastOutstandingRequests(LeastBase):
    name = "least_outstanding_requests"
    summary = "The backend with the fewest requests in flight (per unit of weight)."
    counter = "outstanding"
    label = "counts"
