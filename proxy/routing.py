"""Routing: which route of a listener takes a request, and what it does with it.

Pure logic, no I/O. A `Router` is built once per listener and config
generation: the listener's routes sorted by priority (higher first; ties keep
the order the listener lists them in), each compiled into a `CompiledRoute`
whose conditions are checked cheapest first:

- host: exact (`api.example.com`) or a wildcard `*.example.com` that matches
  any name ending in `.example.com` (not `example.com` itself); compared
  case-insensitively, without the port;
- path_prefix: a plain prefix of the path (without the query string);
- path_regex: `re.search` in the path (anchor with ^ and $ for a full match);
- methods: one of the listed methods;
- headers / query / cookies: name -> exact value, or "*" for "present".

Every given condition must hold; an empty match takes every request.

The first matching route decides with one action: forward to a pool, split
between pools by weight (canary releases; the random draw comes from the
injected rng so tests are deterministic), a fixed response, or a redirect.
`Location` may use `{host}`, `{path}` (with the query) and `{scheme}`.
No match is a `RouteDecision` of kind "no_route" with a reason naming the
listener, host and path (the proxy turns it into a 404).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import parse_qsl

from proxy.config import Config, ListenerConfig, Respond, RouteConfig

FORWARD = "forward"
RESPOND = "respond"
REDIRECT = "redirect"
NO_ROUTE = "no_route"


@dataclass(slots=True)
class RouteRequest:
    """What routing looks at: host without port and lower-cased, path without query."""

    host: str | None
    path: str
    method: str
    headers: Mapping[str, str]  # lower-case names
    query: str = ""  # raw query string (parsed only when a route asks)
    cookies: Mapping[str, str] | None = None
    scheme: str = "http"
    target: str = ""  # path with query as received, for redirects
    _query_dict: dict | None = None

    def query_params(self) -> dict[str, str]:
        if self._query_dict is None:
            params: dict[str, str] = {}
            for name, value in parse_qsl(self.query, keep_blank_values=True):
                params.setdefault(name, value)
            self._query_dict = params
        return self._query_dict


@dataclass(slots=True)
class RouteDecision:
    kind: str  # forward | respond | redirect | no_route
    route: str | None = None
    pool: str | None = None
    respond: Respond | None = None
    location: str | None = None
    status: int = 0
    # For splits: {"weights": {pool: w}, "roll": r, "chosen": pool}; the event shows it.
    split: dict | None = None
    reason: str = ""


def host_matches(pattern: str, host: str | None) -> bool:
    """`pattern` is lower-case; `*.example.com` needs at least one more label."""
    if host is None:
        return False
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _present_or_equal(expected: str, actual: str | None) -> bool:
    if actual is None:
        return False
    return expected == "*" or actual == expected


class CompiledRoute:
    __slots__ = ("name", "config", "priority", "order", "host", "prefix", "regex", "methods",
                 "headers", "query", "cookies", "action", "pool", "split", "split_total",
                 "rng")

    def __init__(self, name: str, config: RouteConfig, order: int):
        self.name = name
        self.config = config
        # A seeded split draws from its own generator (the same rolls in any process).
        self.rng = random.Random(config.seed) if config.seed is not None else None
        self.priority = config.priority
        self.order = order
        m = config.match
        self.host = m.host.lower().rstrip(".") if m.host else None
        self.prefix = m.path_prefix
        self.regex = re.compile(m.path_regex) if m.path_regex else None
        self.methods = frozenset(m.methods) if m.methods else None
        self.headers = [(k.lower(), v) for k, v in m.headers.items()]
        self.query = list(m.query.items())
        self.cookies = list(m.cookies.items())
        if config.forward:
            self.action = FORWARD
            self.pool = config.forward
        elif config.split:
            self.action = "split"
            self.pool = None
        elif config.respond:
            self.action = RESPOND
            self.pool = None
        else:
            self.action = REDIRECT
            self.pool = None
        self.split = [(t.pool, t.weight) for t in config.split or [] if t.weight > 0]
        self.split_total = sum(w for _, w in self.split)

    def matches(self, req: RouteRequest) -> bool:
        # Cheapest checks first; most routes fail on host or path.
        if self.host is not None and not host_matches(self.host, req.host):
            return False
        if self.prefix is not None and not req.path.startswith(self.prefix):
            return False
        if self.methods is not None and req.method not in self.methods:
            return False
        if self.regex is not None and self.regex.search(req.path) is None:
            return False
        for name, expected in self.headers:
            if not _present_or_equal(expected, req.headers.get(name)):
                return False
        if self.query:
            params = req.query_params()
            for name, expected in self.query:
                if not _present_or_equal(expected, params.get(name)):
                    return False
        if self.cookies:
            cookies = req.cookies or {}
            for name, expected in self.cookies:
                if not _present_or_equal(expected, cookies.get(name)):
                    return False
        return True

    def decide(self, req: RouteRequest, rng: random.Random) -> RouteDecision:
        if self.action == FORWARD:
            return RouteDecision(FORWARD, self.name, pool=self.pool)
        if self.action == "split":
            roll = (self.rng or rng).random() * self.split_total
            chosen = self.split[-1][0]
            upto = 0.0
            for pool, weight in self.split:
                upto += weight
                if roll < upto:
                    chosen = pool
                    break
            return RouteDecision(FORWARD, self.name, pool=chosen, split={
                "weights": {p: w for p, w in self.split}, "roll": round(roll, 3),
                "chosen": chosen})
        if self.action == RESPOND:
            respond = self.config.respond
            return RouteDecision(RESPOND, self.name, respond=respond, status=respond.status)
        redirect = self.config.redirect
        return RouteDecision(REDIRECT, self.name, status=redirect.status,
                             location=expand_location(redirect.location, req))


def expand_location(template: str, req: RouteRequest) -> str:
    if "{" not in template:
        return template
    return (template.replace("{host}", req.host or "")
            .replace("{path}", req.target or req.path)
            .replace("{scheme}", req.scheme))


class Router:
    """The routes of one listener, in the order they are tried."""

    def __init__(self, listener_name: str, listener: ListenerConfig,
                 routes: Mapping[str, RouteConfig], rng: random.Random | None = None):
        self.listener = listener_name
        self.rng = rng or random.Random()
        compiled = [CompiledRoute(name, routes[name], i)
                    for i, name in enumerate(listener.routes) if name in routes]
        # Stable sort: equal priorities keep the listener's order.
        compiled.sort(key=lambda r: -r.priority)
        self.routes = compiled
        # The common case, one catch-all route, skips matching entirely.
        self._only = compiled[0] if len(compiled) == 1 and _is_catch_all(compiled[0]) else None
        # ... and when it forwards to one pool, the decision is always the same
        # (the data plane reads it without building a RouteRequest).
        self.forward_all = (RouteDecision(FORWARD, self._only.name, pool=self._only.pool)
                            if self._only is not None and self._only.action == FORWARD
                            else None)

    def match(self, req: RouteRequest) -> RouteDecision:
        only = self._only
        if only is not None:
            return only.decide(req, self.rng)
        for route in self.routes:
            if route.matches(req):
                return route.decide(req, self.rng)
        return RouteDecision(NO_ROUTE, reason=(
            f"no route of listener {self.listener} matched host "
            f"{req.host or '(none)'!s} path {req.path} (method {req.method}); "
            f"routes tried: {', '.join(r.name for r in self.routes) or 'none'}"))

    def describe(self) -> list[dict]:
        return [{"name": r.name, "priority": r.priority,
                 "match": r.config.match.model_dump(exclude_defaults=True),
                 "action": r.action} for r in self.routes]


def _is_catch_all(route: CompiledRoute) -> bool:
    return not route.config.match.needs_http


def build_routers(config: Config, rng: random.Random | None = None) -> dict[str, Router]:
    """One Router per HTTP listener of `config`."""
    return {name: Router(name, listener, config.routes, rng)
            for name, listener in config.listeners.items() if listener.protocol == "http"}
