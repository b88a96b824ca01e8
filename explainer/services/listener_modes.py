"""Flip a listener between L4 and L7, and between TLS termination and passthrough.

Pure functions: the running config (GET /config?format=json) in, the whole new
config out, ready for PUT /config. No I/O, so every rule here is tested with
plain dicts (tests/explainer/test_listener_modes.py).

Theory of operation. A listener's *targets* are what it sends where: a
default pool (every request, or every connection) and, optionally, pools
chosen by a host name. Both layers can express those two things, each in its
own words, so a flip translates them instead of throwing them away:

    L7 (http)                               L4 (tcp)
    route with an empty match -> pool       listener.pool
    route with match {host: H} -> pool      tls.sni {H: pool}   (passthrough only:
                                            the name is read from the ClientHello)

Everything else a route can say (a path, a header, a method, a cookie, a
split, a fixed answer) has no L4 equivalent; the flip says which routes stop
applying. Routes are never deleted: the L4 listener simply stops using them,
so flipping back finds and reuses them (the config comes back as it was).

What the new mode *cannot* do is left for the proxy to say. A pool with cookie
stickiness or header hashing, a pool that re-encrypts, a PROXY protocol pool
behind HTTP, passthrough on an http listener, termination on a tcp listener:
the flip builds the config the learner asked for and the proxy refuses it
with its own path and message, which the page shows as is. Only when a piece
the new mode needs is nowhere to be found (no pool to send to, no certificate
to terminate with) does the flip refuse by itself, saying why.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from labs.problems import Problem

PROTOCOLS = {"http": "L7 (HTTP)", "tcp": "L4 (TCP)"}
TLS_MODES = {
    "none": "no TLS",
    "terminate": "TLS terminated by the proxy",
    "passthrough": "TLS passed through to the backends",
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
MATCH_WORDS = {"host": "host", "path_prefix": "path", "path_regex": "path regex",
               "methods": "method", "headers": "header", "query": "query", "cookies": "cookie"}


class ModeError(Problem):
    """The flip cannot be built from this config; `errors` is [{"path", "message"}]."""

    def __init__(self, message: str, path: str = "", status: int = 409):
        super().__init__(message, status=status, path=path)


@dataclass
class ModeChange:
    """The new config, and what the flip did in words."""

    listener: str
    protocol: str
    tls: str
    config: dict
    message: str
    notes: list[str] = field(default_factory=list)
    unchanged: bool = False

    @property
    def label(self) -> str:
        return mode_label(self.protocol, self.tls)


def mode_label(protocol: str, tls: str) -> str:
    return f"{PROTOCOLS.get(protocol, protocol)} with {TLS_MODES.get(tls, tls)}"


# ---------------------------------------------------------------- reading a config

def listener_mode(listener: dict) -> tuple[str, str]:
    """(protocol, tls mode) of one listener as the config says it."""
    tls = listener.get("tls") or None
    return listener.get("protocol") or "http", (tls.get("mode") or "terminate") if tls else "none"


def _clean_match(match: dict | None) -> dict:
    """A route match without its empty keys ({} for a catch-all)."""
    return {k: v for k, v in (match or {}).items() if v not in (None, "", [], {})}


def _route_pool(route: dict) -> str | None:
    """The pool a route forwards to (a split: its heaviest target)."""
    if route.get("forward"):
        return route["forward"]
    split = route.get("split") or []
    if split:
        return max(split, key=lambda t: t.get("weight", 0)).get("pool")
    return None


def _match_text(match: dict) -> str:
    parts = []
    for key, value in match.items():
        word = MATCH_WORDS.get(key, key)
        if isinstance(value, dict):
            parts += [f"{word} {k}={v}" for k, v in value.items()]
        elif isinstance(value, list):
            parts.append(f"{word} {'/'.join(map(str, value))}")
        else:
            parts.append(f"{word} {value}")
    return ", ".join(parts)


def _ordered_routes(config: dict, listener: dict) -> list[tuple[str, dict]]:
    """The listener's routes in the order the proxy tries them: priority, then position."""
    routes = config.get("routes") or {}
    named = [(i, name, routes[name]) for i, name in enumerate(listener.get("routes") or [])
             if name in routes]
    named.sort(key=lambda item: (-(item[2].get("priority") or 0), item[0]))
    return [(name, route) for _i, name, route in named]


@dataclass
class Targets:
    default: str | None = None  # pool for everything not matched by a host
    fallback: str | None = None  # no catch-all route: the first pool a route forwards to
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> pool
    lost: list[str] = field(default_factory=list)  # what an L4 listener cannot keep
    host_routes: list[str] = field(default_factory=list)


def http_targets(config: dict, name: str) -> Targets:
    """What an http listener sends where, in terms both layers can express."""
    listener = config["listeners"][name]
    out = Targets()
    first_pool = None
    for rname, route in _ordered_routes(config, listener):
        match = _clean_match(route.get("match"))
        pool = _route_pool(route)
        if pool is None:
            what = "answers by itself" if route.get("respond") else "redirects"
            out.lost.append(f"route {rname} {what} ({_match_text(match) or 'every request'})")
            continue
        if route.get("split") and len(route["split"]) > 1:
            pools = ", ".join(f"{t.get('pool')} {t.get('weight')}" for t in route["split"])
            out.lost.append(f"route {rname} splits between pools ({pools}); "
                            f"only its heaviest pool, {pool}, is kept")
        first_pool = first_pool or pool
        if not match:
            if out.default is None:
                out.default = pool
            continue
        if out.default is not None:
            continue  # after a catch-all it never matches anyway
        if set(match) == {"host"}:
            host = str(match["host"]).lower().rstrip(".")
            out.hosts.setdefault(host, pool)
            out.host_routes.append(rname)
            continue
        out.lost.append(f"route {rname} ({_match_text(match)} -> pool {pool})")
    if out.default is None:
        out.fallback = first_pool
    return out


def tcp_targets(config: dict, name: str) -> Targets:
    listener = config["listeners"][name]
    tls = listener.get("tls") or {}
    hosts = dict(tls.get("sni") or {}) if tls.get("mode") == "passthrough" else {}
    return Targets(default=listener.get("pool"), hosts=hosts)


def certificate_names(listener: dict, tls_view: dict | None) -> list[str]:
    """Server names a terminating listener holds certificates for, default first."""
    names: list[str] = []
    certs = (tls_view or {}).get("certificates")
    if certs:  # what the proxy read from the files (subjectAltName), default first
        for cert in sorted(certs, key=lambda c: not c.get("default")):
            names += [n for n in cert.get("names") or [] if n not in names]
        return names
    tls = listener.get("tls") or {}
    for cert in sorted(tls.get("certificates") or [], key=lambda c: not c.get("default")):
        for n in cert.get("names") or ([cert["pki"]] if cert.get("pki") else []):
            if n not in names:
                names.append(n)
    return names


# ---------------------------------------------------------------- building

def _unique(existing, base: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", base).strip("-.") or "route"
    if not NAME.match(base):
        base = ("r" + base)[:63]
    base = base[:63]
    name, n = base, 2
    while name in existing:
        suffix = f"-{n}"
        name = base[: 63 - len(suffix)] + suffix
        n += 1
    return name


def _find_route(routes: dict, match: dict, pool: str, prefer: list[str]) -> str | None:
    """An existing route with exactly this match that forwards to `pool`."""
    found = [rname for rname, route in routes.items()
             if route.get("forward") == pool and _clean_match(route.get("match")) == match
             and not route.get("split")]
    found.sort(key=lambda r: (r not in prefer, prefer.index(r) if r in prefer else 0))
    return found[0] if found else None


def _routes_for(config: dict, name: str, targets: Targets, notes: list[str]) -> list[str]:
    """Routes (found or created) that do at L7 what the targets did at L4."""
    routes = config.setdefault("routes", {})
    chosen: list[str] = []
    created: list[str] = []
    prefer = ["all", f"{name}-all"]
    for host, pool in targets.hosts.items():
        rname = _find_route(routes, {"host": host}, pool, [])
        if rname is None and pool == targets.default:
            continue  # the catch-all sends it there anyway
        if rname is None:
            rname = _unique(routes, f"{name}-{host.replace('*', 'any')}")
            routes[rname] = {"match": {"host": host}, "forward": pool}
            created.append(rname)
        chosen.append(rname)
    if targets.default is not None:
        rname = _find_route(routes, {}, targets.default, prefer)
        if rname is None:
            rname = _unique(routes, "all" if "all" not in routes else f"{name}-all")
            routes[rname] = {"match": {}, "forward": targets.default}
            created.append(rname)
        chosen.append(rname)
    if created:
        notes.append(f"created route{'s' if len(created) > 1 else ''} {', '.join(created)}")
    return chosen


def _terminate_block(config: dict, name: str, old_tls: dict, names: list[str]) -> dict:
    """A terminate tls block from the pieces this config has, or ModeError saying why not."""
    unknown = old_tls.get("unknown_sni") or "default"
    for other, listener in (config.get("listeners") or {}).items():
        tls = listener.get("tls") or {}
        if other != name and tls.get("mode") == "terminate" and tls.get("certificates"):
            return {"mode": "terminate", "certificates": copy.deepcopy(tls["certificates"]),
                    "unknown_sni": unknown}
    plain = [n for n in names if not n.startswith("*.")]
    if not plain:
        raise ModeError(
            f"to terminate TLS the proxy needs a certificate for the names clients ask for, "
            f"and this config has none for listener {name}: it routes on no server name "
            "(no route with match.host, no tls.sni) and no other listener holds certificates. "
            "Give it one through PUT /config, e.g. tls: {certificates: [{pki: www.lab.test}]} "
            "(after `python -m proxy pki init`)", path=f"listeners.{name}.tls")
    return {"mode": "terminate", "certificates": [{"pki": n} for n in plain],
            "unknown_sni": unknown}


def _tls_words(tls: dict | None, protocol: str) -> str:
    if not tls:
        return "no TLS"
    if tls.get("mode") == "passthrough":
        sni = tls.get("sni") or {}
        routes = ", ".join(f"{n} -> {p}" for n, p in sni.items())
        return ("TLS passed through undecrypted" + (f", routed by server name ({routes})"
                                                     if routes else "")
                + "; the backends must speak TLS themselves")
    certs = ", ".join(c.get("pki") or c.get("cert") or "?" for c in tls.get("certificates") or [])
    return f"TLS terminated here (certificates: {certs})"


def build(config: dict, name: str, protocol: str, tls_mode: str,
          tls_view: dict | None = None) -> ModeChange:
    """The whole new config with listener `name` in (protocol, tls_mode)."""
    if protocol not in PROTOCOLS:
        raise ModeError(f"protocol must be http (L7) or tcp (L4), got {protocol!r}",
                        path="protocol", status=400)
    if tls_mode not in TLS_MODES:
        raise ModeError(f"tls must be none, terminate or passthrough, got {tls_mode!r}",
                        path="tls", status=400)
    listeners = config.get("listeners") or {}
    if name not in listeners:
        known = ", ".join(listeners) or "none"
        raise ModeError(f"no listener named {name!r}; listeners: {known}",
                        path=f"listeners.{name}", status=404)
    new = copy.deepcopy(config)
    old = listeners[name]
    old_protocol, old_tls_mode = listener_mode(old)
    old_tls = old.get("tls") or {}
    if (old_protocol, old_tls_mode) == (protocol, tls_mode):
        return ModeChange(name, protocol, tls_mode, new, unchanged=True,
                          message=f"Listener {name} is already {mode_label(protocol, tls_mode)}: "
                                  "nothing to change.")
    targets = (http_targets if old_protocol == "http" else tcp_targets)(config, name)
    names = list(targets.hosts)
    if old_tls_mode == "terminate":
        names = certificate_names(old, tls_view) + [n for n in names if n not in
                                                    certificate_names(old, tls_view)]
    notes: list[str] = []
    listener = new["listeners"][name]

    if protocol == "tcp":
        passthrough = tls_mode == "passthrough"
        if targets.default is None and targets.fallback is not None and not (
                passthrough and targets.hosts):
            targets.default = targets.fallback
            targets.lost.append(f"no route of listener {name} takes every request, so every "
                                f"connection goes to pool {targets.fallback}, the first one a "
                                "route forwards to")
        if targets.default is None and not (passthrough and targets.hosts):
            raise ModeError(
                f"an L4 listener sends every connection to one pool, and listener {name} "
                "forwards to none (its routes only answer or redirect by themselves)",
                path=f"listeners.{name}.routes")
        listener["protocol"] = "tcp"
        listener["routes"] = []
        listener["pool"] = targets.default
        if old_protocol == "http":
            dropped = [r for r in (old.get("routes") or [])]
            if dropped:
                notes.append(f"it no longer uses route{'s' if len(dropped) > 1 else ''} "
                             f"{', '.join(dropped)} (kept in the config for the way back)")
            if targets.lost:
                notes.append("at L4 nothing of HTTP is seen, so these stop applying: "
                             + "; ".join(targets.lost))
        if tls_mode == "none":
            listener["tls"] = None
            moved = {h: p for h, p in targets.hosts.items() if p != targets.default}
            if moved:
                notes.append("without TLS passthrough there is no server name to route on, so "
                             "connections for "
                             + ", ".join(f"{h} (pool {p} until now)" for h, p in moved.items())
                             + f" go to pool {targets.default} too")
        elif passthrough:
            sni = {n: targets.default for n in names if HOSTNAME.match(n)}
            sni.update({h: p for h, p in targets.hosts.items() if HOSTNAME.match(h)})
            if old_tls_mode == "passthrough":
                sni = dict(old_tls.get("sni") or {})
            if targets.default is None:
                sni = {h: p for h, p in sni.items() if p is not None}
            listener["tls"] = {"mode": "passthrough", "sni": sni,
                               "unknown_sni": old_tls.get("unknown_sni") or "default"}
            if targets.default is None:
                listener["tls"]["unknown_sni"] = "refuse"
        else:  # terminate on tcp: the proxy refuses it, in its own words
            listener["tls"] = (copy.deepcopy(old_tls) if old_tls_mode == "terminate"
                               else _terminate_block(config, name, old_tls, names))
    else:  # http
        listener["protocol"] = "http"
        listener["pool"] = None
        if old_protocol == "tcp":
            if targets.default is None and not targets.hosts:
                raise ModeError(f"listener {name} sends to no pool, so there is nothing for "
                                "a route to forward to", path=f"listeners.{name}.pool")
            listener["routes"] = _routes_for(new, name, targets, notes)
            if old_tls_mode == "passthrough" and tls_mode == "none" and targets.hosts:
                notes.append("server names became host routes: plain HTTP clients name the "
                             "host in the Host header")
        if tls_mode == "none":
            listener["tls"] = None
        elif tls_mode == "terminate":
            if old_tls_mode == "terminate":
                listener["tls"] = copy.deepcopy(old_tls)
            else:
                listener["tls"] = _terminate_block(config, name, old_tls, names)
                if old_tls_mode == "passthrough":
                    notes.append("the backends now get plain HTTP from the proxy: the TLS "
                                 "they spoke for passthrough is not used (pool tls would "
                                 "re-encrypt)")
        else:  # passthrough on http: the proxy refuses it, in its own words
            sni = {n: targets.default for n in names if HOSTNAME.match(n) and targets.default}
            sni.update({h: p for h, p in targets.hosts.items() if HOSTNAME.match(h)})
            listener["tls"] = {"mode": "passthrough", "sni": sni,
                               "unknown_sni": old_tls.get("unknown_sni") or "default"}

    if protocol == "tcp":
        where = (f"every connection goes to pool {targets.default}" if targets.default
                 else "connections are routed by server name only")
        head = f"Listener {name} is now L4 (TCP): {where}, its bytes relayed as they are"
    else:
        head = (f"Listener {name} is now L7 (HTTP): requests are routed by "
                f"{', '.join(listener['routes'])}")
    message = f"{head}; {_tls_words(listener.get('tls'), protocol)}."
    return ModeChange(name, protocol, tls_mode, new, message=message, notes=notes)
