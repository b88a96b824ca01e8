"""Where a graded lab run's sandbox runs: on the site's driver, or on local processes.

A run uses the driver the site places sandboxes with (labs/services/sandboxes.py:
processes, containers, swarm), so that a hosted cohort's runs are isolated like its
dashboards. A container sandbox (labs/sandbox/containers.py, swarm.py) is one proxy and
its toy backends on the container's loopback, reached through a gateway that relays TCP,
with no route out; some labs need more than that:

==========================  ===============================================================
the lab has                 why a container sandbox cannot give it
==========================  ===============================================================
sandbox.proxies             one proxy per container; several balancers side by side do not
sandbox.floating            a floating address one balancer at a time binds (pair.py)
sandbox.apps                gunicorn or a toy backend in another mode is started beside the
                            sandbox by labs/framework/services.py, on the lab host
sandbox.pki                 the lab PKI's files are on the lab host, not in the container
sessions: redis             no route out of the container to Redis
needs: client_addresses     its grade reads each client's own address (127.0.0.x); through
                            the gateway every client arrives from 127.0.0.1
a pool hashing on client_ip the same: every client would hash alike (the learner's config)
a UDP listener              the gateway relays TCP only
==========================  ===============================================================

Such a run falls back to local processes (the default) or is refused (``fallback:
"refuse"``); either way the run record says where it ran and why (``Placement.to_json``
in the recording's ``sandbox`` figures, shown on the result page and by the CLI).

``decide`` is pure: the lab's spec, the learner's settings and config in, a `Placement` out.
"""
from __future__ import annotations

from dataclasses import dataclass

PROCESSES = "processes"
FALLBACKS = ("processes", "refuse")


@dataclass(frozen=True)
class Placement:
    driver: str  # where the run's sandbox runs: processes | containers | swarm
    site_driver: str  # where the site places sandboxes
    reasons: tuple[str, ...] = ()  # why the run is not on the site's driver
    refused: bool = False  # the site refuses such runs rather than fall back

    @property
    def fell_back(self) -> bool:
        return self.driver != self.site_driver

    @property
    def why(self) -> str:
        return "; ".join(self.reasons)

    def message(self) -> str:
        """One sentence for the learner: where the run is, and why there."""
        if self.refused:
            return (f"this lab cannot run in a {self.site_driver} sandbox here: it needs "
                    f"{self.why}. Ask whoever runs this site to allow process sandboxes "
                    "for such labs (LBLAB_LABS_FALLBACK=processes)")
        if self.fell_back:
            return (f"this run's sandbox ran as local processes, not in a {self.site_driver} "
                    f"sandbox, because the lab needs {self.why}")
        return f"this run's sandbox ran on the {self.driver} driver"

    def to_json(self) -> dict:
        return {"driver": self.driver, "site_driver": self.site_driver,
                "reasons": list(self.reasons), "message": self.message()}


def container_gaps(spec, settings: dict, config: dict | None = None) -> list[str]:
    """What the lab needs that a container sandbox lacks (the table in the module doc)."""
    sb = spec.sandbox
    gaps = []
    if sb.proxies:
        gaps.append(f"{len(sb.proxies)} balancers side by side (sandbox.proxies)")
    if sb.floating:
        gaps.append("a floating address (sandbox.floating)")
    kinds = sorted({_app_kind(app) for app in sb.apps.values()})
    if kinds:
        gaps.append(f"{' and '.join(kinds)} (sandbox.apps)")
    if sb.pki:
        gaps.append("certificates of the lab PKI (sandbox.pki)")
    if settings.get("sessions", "redis" if sb.redis else "memory") == "redis":
        gaps.append("sessions in Redis (lab.sessions: redis)")
    if "client_addresses" in spec.needs:
        gaps.append("each client's own address (needs: client_addresses)")
    if "client_addresses" not in spec.needs and _hashes_client_address(config or {}):
        gaps.append("each client's own address (a pool hashes on client_ip)")
    listeners = (config or {}).get("listeners") or {}
    if any(isinstance(v, dict) and v.get("protocol") == "udp" for v in listeners.values()):
        gaps.append("a UDP listener")
    return gaps


HASHING = {"ip_hash", "consistent_hash", "consistent_hash_bounded", "maglev"}


def _hashes_client_address(config: dict) -> bool:
    """A pool picks by a hash of the client's address (hash_key's default source)."""
    for pool in (config.get("pools") or {}).values():
        balancer = (pool.get("balancer") or {}) if isinstance(pool, dict) else {}
        if not isinstance(balancer, dict) or balancer.get("algorithm") not in HASHING:
            continue
        key = balancer.get("hash_key") or {}
        if isinstance(key, dict) and key.get("source", "client_ip") == "client_ip":
            return True
    return False


def _app_kind(app) -> str:
    if app.kind == "gunicorn":
        return "gunicorn in place of toy backends"
    if app.tls:
        return "toy backends serving TLS"
    return f"toy backends in {app.mode} mode"


def decide(spec, settings: dict, config: dict | None, site_driver: str,
           fallback: str = "processes") -> Placement:
    """Where to run: the site's driver when it can serve the lab, else ``fallback``."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback {fallback!r}: choose {' or '.join(FALLBACKS)}")
    if site_driver == PROCESSES:
        return Placement(PROCESSES, PROCESSES)
    gaps = tuple(container_gaps(spec, settings, config))
    if not gaps:
        return Placement(site_driver, site_driver)
    if fallback == "refuse":
        return Placement(site_driver, site_driver, gaps, refused=True)
    return Placement(PROCESSES, site_driver, gaps)
