"""Traffic runs: locust profiles against a sandbox, run as separate processes (service.py)."""
from labs.traffic.service import PROFILES, TrafficError, TrafficService, parse_stats

__all__ = ["PROFILES", "TrafficError", "TrafficService", "parse_stats"]
