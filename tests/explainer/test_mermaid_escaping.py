"""Diagrams drawn from client- or learner-controlled text stay diagrams.

A request's Host header, path and the names a learner gives (pools, listeners, backends,
route matches) end up in Mermaid text. Mermaid reads ``%%{init: ...}%%`` directives
anywhere in that text, ``%%`` comments out the rest of a line, ``click`` binds callbacks
and ``style``/``classDef``/``:::`` apply CSS. Each must arrive as plain characters: the
diagram keeps the statements the generator wrote and nothing more.
"""
from __future__ import annotations

import http.client
import re

from django.test import Client

from labs import diagrams

HOSTILE = [
    '%%{init: {"theme": "dark", "themeVariables": {"primaryColor": "#ff0000"}}}%%',
    "%%{config: {'securityLevel': 'loose'}}%%",
    "x%% the rest is a comment",
    "a\nclick C call alert(1)",
    "b; click P href 'javascript:alert(1)'",
    "c\nstyle C fill:#f00",
    'd"]:::evil\nclassDef evil fill:red',
    "e & F",
    "<img src=x onerror=alert(1)>",
    "&#37;&#37;{init: {}}&#37;&#37;",
]

SYNTAX = ["%%", "{", "}", "\n", '"', ";", "<", ">", "&", "#"]


def statements(text: str) -> list[str]:
    """Each line's statement: its keyword or node id ("participant", "Note", "b0_0")."""
    return [(re.match(r"\s*([A-Za-z_]\w*)", line) or re.match("", "")).group(0).strip()
            for line in text.splitlines()]


def test_escape_leaves_no_mermaid_or_html_syntax():
    for text in HOSTILE:
        out = diagrams.escape(text, 400)
        for token in SYNTAX:
            assert token not in out, (text, token, out)


def request_event(host: str, path: str = "/") -> dict:
    return {"type": "request", "request_id": "r1", "client": "127.0.0.1:5000",
            "listener": "web", "method": "GET", "path": path, "host": host, "pool": "web",
            "algorithm": "round_robin", "route": "all", "backend": "b1", "status": 200,
            "candidates": [{"name": "b1", "eligible": True}], "latency_ms": 1.2,
            "timings": {"route_matched": 0.1, "backend_picked": 0.2, "connected": 0.4,
                        "first_byte": 1.0}, "termination": "--"}


def test_a_request_diagram_keeps_its_statements_whatever_the_client_sends():
    plain = diagrams.request_sequence(request_event("example.org", "/"))
    for text in HOSTILE:
        drawn = diagrams.request_sequence(request_event(text, "/" + text))
        assert statements(drawn) == statements(plain), text
        assert "%%" not in drawn and "{" not in drawn and "click" not in statements(drawn)


def test_a_topology_keeps_its_statements_whatever_the_learner_names():
    def state(name: str, match: str) -> dict:
        return {"listeners": {"web": {"bind": "127.0.0.1:1", "protocol": "http",
                                      "routes": ["all"]}},
                "routes": {"all": {"match": {"host": match, "path_prefix": match},
                                   "forward": "web"}},
                "pools": {"web": {"algorithm": "round_robin", "backends": [
                    {"name": name, "address": "127.0.0.1:2", "health": "healthy",
                     "intent": "active", "eligible": True, "weight": 1}]}}}

    plain = diagrams.topology(state("b1", "example.org"))
    for text in HOSTILE:
        drawn = diagrams.topology(state(text, text))
        assert statements(drawn) == statements(plain), text
        assert "%%" not in drawn


def test_a_real_request_with_a_directive_in_its_host_header_draws_inertly(lab, site_on, db):
    """End to end: a real proxy refuses a directive in Host (no host has those characters)
    and records the refusal, whose error quotes the Host; a directive in the path reaches
    the routing as sent. The site draws both without a live directive."""
    site_on(lab)
    host, port = lab.proxy_url.removeprefix("http://").split(":")
    directive = '%%{init: {"theme": "dark", "themeCSS": ".node rect {fill: red}"}}%%'
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/", headers={"Host": directive})
    refused = conn.getresponse()
    refused.read()
    conn.close()
    assert refused.status == 400
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/%%{init:{theme:dark}}%%/click", headers={"X-Request-Id": "hostile-2"})
    conn.getresponse().read()
    conn.close()
    for request_id, where in ((refused.getheader("X-Request-Id"), "error"), ("hostile-2", "path")):
        resp = Client().get(f"/api/default/requests/{request_id}/diagram")
        assert resp.status_code == 200, resp.content
        body = resp.json()
        assert "%%{init" in body["request"][where]  # the proxy recorded it as sent
        drawn = body["diagram"]
        assert "%%" not in drawn and "{" not in drawn
        assert statements(drawn)[0] == "sequenceDiagram"
