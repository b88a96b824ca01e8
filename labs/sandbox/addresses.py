"""The address rule: a sandbox's config may only point at the sandbox's own addresses.

A learner controls their proxy's config (the lab editor, the dashboard's controls, a
lesson's preset). Without a rule, ``add-backend 192.0.2.1:80`` makes the proxy connect
anywhere this machine can reach, on the learner's behalf: another learner's backends,
another sandbox's admin API, the site itself, the internet. So every config a learner
can influence is checked against what the sandbox owns before it reaches the proxy:

- a backend (and so its health checks, which probe the backend's own address) must be
  one of the sandbox's toy backends: its inner host (or another spelling of loopback when
  that is loopback) and one of its backend ports;
- a listener must bind one of the sandbox's proxy ports on the sandbox's host;
- the admin API must stay where the sandbox put it.

``check_config`` returns every violation as ``{"path", "message"}`` (empty: fine), in the
proxy's own path spelling, so the pages show them where the validator's errors go.
Pure: no I/O, the sandbox record (service.py) is plain data.
"""
from __future__ import annotations

import ipaddress

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def split(address) -> tuple[str, int] | None:
    """'host:port', '[v6]:port' or (host, port) -> (host, port); None if unreadable."""
    if isinstance(address, (list, tuple)) and len(address) == 2:
        host, port = address
    elif isinstance(address, str):
        host, sep, port = address.strip().rpartition(":")
        if not sep:
            return None
    else:
        return None
    try:
        port = int(port)
    except (TypeError, ValueError):
        return None
    return str(host).strip().strip("[]").lower(), port


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_host(a: str, b: str) -> bool:
    """Equal hosts; "localhost", 127.0.0.1 and ::1 are one host (but 127.0.0.2 is not)."""
    a, b = a.lower().strip("[]"), b.lower().strip("[]")
    if a == b:
        return True
    canon = {"localhost": "127.0.0.1", "localhost.localdomain": "127.0.0.1",
             "ip6-localhost": "::1", "::1": "127.0.0.1"}
    return canon.get(a, a) == canon.get(b, b) and _loopback(a)


def backend_ports(sb) -> set[int]:
    return {sb.ports[name] for name in sb.backends if name in sb.ports}


def listener_ports(sb) -> set[int]:
    return {port for key, port in sb.ports.items()
            if key == "proxy" or key.startswith("listener.")}


def _own_backends_text(sb) -> str:
    return ", ".join(f"{name} = {url.split('://', 1)[-1]}" for name, url in sb.backends.items())


def check_backend(address, sb, path: str = "address") -> list[dict]:
    found = split(address)
    if found is None:
        return [{"path": path, "message": f"{address!r} is not host:port"}]
    host, port = found
    if same_host(host, sb.inner_host) and port in backend_ports(sb):
        return []
    return [{"path": path, "message": (
        f"{address} is not one of your sandbox's backends; a backend must be one of your own "
        f"toy backends ({_own_backends_text(sb)})")}]


def check_listener(bind, sb, path: str) -> list[dict]:
    found = split(bind)
    ports = sorted(listener_ports(sb))
    if found is not None and found[1] in ports and (
            same_host(found[0], sb.host) or found[0] in ("", "0.0.0.0", "::")
            and not _loopback(sb.host)):
        return []
    return [{"path": path, "message": (
        f"{bind} is not one of your sandbox's listener addresses; listen on "
        f"{' or '.join(f'{sb.host}:{p}' for p in ports)}")}]


def check_config(config: dict, sb) -> list[dict]:
    """Every address in ``config`` (the proxy's YAML shape) that is not the sandbox's own."""
    errors: list[dict] = []
    if not isinstance(config, dict):
        return errors
    for name, listener in (config.get("listeners") or {}).items():
        if isinstance(listener, dict) and "bind" in listener:
            errors += check_listener(listener["bind"], sb, f"listeners.{name}.bind")
    for pool_name, pool in (config.get("pools") or {}).items():
        for i, backend in enumerate((pool or {}).get("backends") or []):
            if isinstance(backend, dict) and "address" in backend:
                errors += check_backend(backend["address"], sb,
                                        f"pools.{pool_name}.backends[{i}].address")
    admin = (config.get("admin") or {}).get("listen")
    if admin is not None and "admin" in sb.ports:
        found = split(admin)
        if found is None or found[1] != sb.ports["admin"] or not same_host(found[0], sb.inner_host):
            errors.append({"path": "admin.listen", "message": (
                f"{admin} is not your sandbox's admin address; keep "
                f"{sb.inner_host}:{sb.ports['admin']}")})
    return errors


def check_backend_among(address, known: list, path: str = "address") -> list[dict]:
    """For a proxy started by hand (no sandbox record): a backend may only be an address
    its running config already uses (``known``: addresses as the proxy reports them)."""
    found = split(address)
    if found is None:
        return [{"path": path, "message": f"{address!r} is not host:port"}]
    pairs = [p for p in (split(k) for k in known) if p]
    if any(found[1] == port and same_host(found[0], host) for host, port in pairs):
        return []
    shown = ", ".join(sorted({f"{h}:{p}" for h, p in pairs})) or "none"
    return [{"path": path, "message": (
        f"{address} is not one of this proxy's backend addresses; use one it already has "
        f"({shown})")}]
