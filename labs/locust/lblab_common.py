"""Shared by LBLab's locustfiles (locust puts this directory on sys.path while loading one).

Client addresses. A load balancer that hashes on the client address (ip_hash, maglev,
source_ip stickiness) must see different clients as different addresses. Locust users all
connect from 127.0.0.1 unless told otherwise, so each user here binds its connections to its
own loopback address, 127.0.0.X (every 127/8 address is local on Linux): the proxy sees a
real, different peer address per user, not a header anyone could forge. A group that must
look like one client (a NAT, an office behind one public address) binds all its users to one
fixed address. Binding only happens when the target is on loopback (a remote proxy could not
answer 127.0.0.X); LBLAB_BIND_SOURCE=0 turns it off.

Environment knobs (all optional): LBLAB_BIND_SOURCE, LBLAB_NAT_ADDRESS (127.0.0.2),
LBLAB_SOURCE_FIRST/LBLAB_SOURCE_COUNT (127.0.0.10 .. +200), plus the ones each profile reads.
"""
from __future__ import annotations

import ipaddress
import itertools
import os
from urllib.parse import urlsplit

import locust.stats
from locust.clients import LocustHttpAdapter

# Write the CSV every second and flush it every second, so a run's progress can be read
# from another process while it runs (the defaults flush every 5 s).
locust.stats.CSV_STATS_INTERVAL_SEC = 1
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 1

NAT_ADDRESS = os.environ.get("LBLAB_NAT_ADDRESS", "127.0.0.2")
_FIRST = ipaddress.ip_address(os.environ.get("LBLAB_SOURCE_FIRST", "127.0.0.10"))
_COUNT = int(os.environ.get("LBLAB_SOURCE_COUNT", "200"))
_next_source = itertools.cycle(range(_COUNT))


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def next_source_address() -> str:
    """A different loopback address for each new user (cycling through _COUNT of them)."""
    return str(_FIRST + next(_next_source))


def target_is_loopback(host_url: str | None) -> bool:
    host = urlsplit(host_url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SourceAddressAdapter(LocustHttpAdapter):
    """Locust's adapter, with every connection bound to ``source_ip`` (any local port)."""

    def __init__(self, source_ip: str):
        self.source_ip = source_ip
        super().__init__(pool_manager=None)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        pool_kwargs["source_address"] = (self.source_ip, 0)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


def bind_source(user, address: str | None = None) -> str | None:
    """Make ``user``'s HTTP client connect from ``address`` (default: its own new one).

    Returns the address used, or None when binding is off or the target is not loopback.
    """
    if os.environ.get("LBLAB_BIND_SOURCE", "1") in ("0", "false", "no", "off"):
        return None
    if not target_is_loopback(user.host):
        return None
    address = address or next_source_address()
    adapter = SourceAddressAdapter(address)
    user.client.mount("http://", adapter)
    user.client.mount("https://", adapter)
    user.source_address = address
    return address
