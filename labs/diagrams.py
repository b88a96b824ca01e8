"""Mermaid diagrams drawn from what really happened: pure functions, no I/O.

Four pictures, each a function from plain data to Mermaid text:

* `topology(state)`: a flowchart of GET /state: listeners -> routes -> pools ->
  backends, each listener with its layer (L7 http, L4 tcp) and TLS mode (none,
  terminate with its certificate names and mTLS, passthrough with its SNI
  routes), an L4 listener linked straight to its pool(s); each backend styled
  by its observed health and its intent (the two are kept apart, as in the
  proxy: a draining backend can be healthy), labelled with its weight,
  connections and requests in flight (against its max_connections when it has
  one), and re-encryption where a pool has it. The balancer features of issue
  14: backup backends are dashed and say "backup" and whether the backups serve
  now; a pool with a queue says its depth and counts; backends with zones are
  grouped in one subgraph per zone, a listener says its zone and a pool whether
  it balances across zones.
* `request_sequence(event)`: one request event's path: client -> listener ->
  route -> balancer -> backend(s) -> response, with the retries and the timings
  the proxy measured.
* `connection_sequence(event)`: one closed L4 connection: client -> listener
  (the server name it read, for TLS passthrough) -> balancer -> backend, the
  bytes relayed each way, who closed it and why.
* `health_episode(events, backend)`: one backend's probes, failures, state
  changes and recovery, consecutive identical results folded into one line.

Text that comes from outside (names, hosts, paths, error messages) goes
through `escape()`: characters with a meaning in Mermaid or HTML become inert
lookalikes (`<` -> `‹`, `;` -> `;`), so such text can neither break the
syntax nor smuggle markup (the page also renders with securityLevel 'strict');
the only markup is the `<br/>` this module writes itself. Node ids are
generated (`l0`, `b1_2`), never taken from names, so a backend called `end` or
`a-b` cannot confuse the parser.
"""
from __future__ import annotations

import unicodedata
from typing import Iterable

# Characters with a meaning in Mermaid syntax or HTML, and inert lookalikes that
# common fonts have. With ";" gone no entity ("&lt;", Mermaid's "#60;") can form,
# and with '"' gone nothing can end a quoted label early; "<" and ">" would be
# markup in flowchart labels; "#" starts a comment in a sequence diagram; a
# backtick would start a markdown string.
# (Mermaid's "#60;" codes themselves come out as raw placeholders from 11.x.)
# "%" goes too: Mermaid reads "%%{init: ...}%%" directives *anywhere* in the text (a
# Host header could restyle or reconfigure the diagram) and "%%" starts a comment that
# would swallow the rest of the line. Braces build directives and flowchart shapes,
# "&" would join participants and start entities, "\\" escapes. Statements such as
# `click`, `style`, `classDef` or `:::` CSS classes only take effect at the start of a
# statement, which outside text can never reach: newlines collapse to spaces and ";"
# (a statement break) is a lookalike.
LOOKALIKES = {'"': "'", ";": "\u037e", "<": "\u2039", ">": "\u203a", "`": "\u02cb",
              "#": "\u266f", "%": "\u066a", "{": "\u2774", "}": "\u2775", "&": "\uff06",
              "\\": "\u29f5"}
MAX_LABEL = 120

HEALTH_CLASSES = ("healthy", "initial", "unhealthy")
INTENT_CLASSES = ("draining", "maintenance")

CLASS_DEFS = {
    "listener": "fill:#eef2ff,stroke:#4f46e5,color:#1e1b4b,stroke-width:1.5px",
    "listener4": "fill:#fff7ed,stroke:#c2410c,color:#431407,stroke-width:2px",
    "route": "fill:#f0f9ff,stroke:#0284c7,color:#0c4a6e",
    "unused": "fill:#f8fafc,stroke:#cbd5e1,color:#64748b,stroke-dasharray:3 3",
    "pool": "fill:#fdf4ff,stroke:#a21caf,color:#4a044e,stroke-width:1.5px",
    "terminal": "fill:#f8fafc,stroke:#94a3b8,color:#334155,stroke-dasharray:4 3",
    "healthy": "fill:#dcfce7,stroke:#16a34a,color:#14532d,stroke-width:1.5px",
    "initial": "fill:#f1f5f9,stroke:#64748b,color:#0f172a",
    "unhealthy": "fill:#fee2e2,stroke:#dc2626,color:#7f1d1d,stroke-width:2.5px",
    "ejected": "fill:#f3e8ff,stroke:#9333ea,color:#581c87,stroke-width:2px",
    "draining": "fill:#fef3c7,stroke:#d97706,color:#78350f,stroke-dasharray:6 3",
    "maintenance": "fill:#e5e7eb,stroke:#6b7280,color:#374151,stroke-dasharray:2 2",
    # Added to a backup backend's own class (`class b0_3 backup`): dashes over its health
    # colours, so a backup reads as one whatever its health. Last, so it wins.
    "backup": "stroke-dasharray:8 4,stroke-width:2px",
}

TERMINATION_WHO = {"C": "the client", "S": "the backend", "P": "the proxy", "-": None}
TERMINATION_PHASE = {
    "R": "while the request was arriving",
    "Q": "while picking a backend",
    "C": "while connecting to the backend",
    "H": "while waiting for the response headers",
    "D": "while the response body was flowing",
    "-": None,
}


# ---------------------------------------------------------------- text

def escape(text: object, limit: int = MAX_LABEL) -> str:
    """Make outside text inert inside a quoted Mermaid label, a message or a note.

    Syntax characters become lookalikes, whitespace runs one space (a newline
    would end a statement), invisible format characters (bidi overrides...)
    are dropped, and long text is cut with an ellipsis.
    """
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "\u2026"
    out = []
    for ch in s:
        if ch in LOOKALIKES:
            out.append(LOOKALIKES[ch])
        elif ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Co", "Cs"):
            out.append(ch)
    return "".join(out)


def explain_termination(code: str | None) -> str:
    """HAProxy-style two-letter termination code in words ("--" is a clean finish)."""
    if not code or code == "--":
        return "finished normally"
    who = TERMINATION_WHO.get(code[0], f"unknown party {code[0]!r}")
    phase = TERMINATION_PHASE.get(code[1:2] or "-", f"in unknown phase {code[1:2]!r}")
    if who is None:
        who = "the connection"
    parts = [f"{who} ended it"]
    if phase:
        parts.append(phase)
    return " ".join(parts)


def _ms(value: object) -> str:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"
    if v >= 100:
        return f"{v:.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def _inputs_text(inputs: dict | None, limit: int = 6) -> str:
    if not inputs:
        return ""
    items = []
    for key, value in list(inputs.items())[:limit]:
        if isinstance(value, float):
            value = round(value, 3)
        if isinstance(value, (dict, list)):
            value = _compact(value)
        items.append(f"{key}={value}")
    more = len(inputs) - limit
    if more > 0:
        items.append(f"+{more} more")
    return ", ".join(items)


def _compact(value: object, limit: int = 40) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {v}" for k, v in value.items())
        text = "{" + text + "}"
    elif isinstance(value, list):
        text = "[" + ", ".join(str(v) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# ---------------------------------------------------------------- topology

def backend_class(backend: dict) -> str:
    """One class per backend: intent wins over ejection, ejection over health."""
    intent = backend.get("intent", "active")
    if intent in INTENT_CLASSES:
        return intent
    if backend.get("ejected"):
        return "ejected"
    health = backend.get("health", "initial")
    return health if health in HEALTH_CLASSES else "initial"


def _backend_label(backend: dict, l4: bool = False, tls: str = "") -> str:
    name = escape(backend.get("name", "?"), 40)
    cls = backend_class(backend)
    status = {"healthy": "healthy", "initial": "not checked yet", "unhealthy": "UNHEALTHY",
              "ejected": "ejected (passive health)", "draining": "draining",
              "maintenance": "maintenance"}[cls]
    if cls in INTENT_CLASSES and backend.get("health") == "unhealthy":
        status += ", unhealthy"
    weight = backend.get("weight", 1)
    eff = backend.get("effective_weight")
    wtext = f"weight {weight}"
    if eff is not None and float(eff) != float(weight):
        wtext += f" (ramping: {float(eff):g})"
    limit = backend.get("max_connections")
    cap = f"/{escape(limit, 10)}" if limit is not None else ""
    if l4:
        counts = f"{backend.get('active_connections', 0)}{cap} open TCP conn"
    else:
        counts = (f"{backend.get('active_connections', 0)} conn · "
                  f"{backend.get('outstanding', 0)}{cap} in flight")
    if limit is not None and int(backend.get("outstanding") or 0) >= int(limit):
        counts += " · FULL"
    tls_line = f"<br/>{escape(tls, 40)}" if tls else ""
    role = f"<br/>{backup_text}" if (backup_text := _backup_role(backend)) else ""
    return (f"{name} · {status}{role}<br/>{escape(backend.get('address', ''), 60)}"
            f"<br/>{wtext} · {counts}{tls_line}")


def _backup_role(backend: dict, active: bool | None = None) -> str:
    """"backup" on a backup backend's node (with whether backups serve, when known)."""
    if not backend.get("backup"):
        return ""
    if active is None:
        return "backup"
    return "backup · serving now" if active else "backup · standby"


def queue_text(queue: dict | None) -> list[str]:
    """A pool's queue (HAProxy maxconn + queue) as GET /state's `queue` says: depth
    against its bound, then what it has done. Nothing when no queue is configured."""
    if not queue or queue.get("max_length") is None:
        return []
    timeout = queue.get("timeout")
    wait = f" · waits ≤ {float(timeout):g}s" if timeout is not None else ""
    head = f"queue: {queue.get('depth', 0)}/{queue['max_length']} waiting{wait}"
    done = (f"queued {queue.get('queued', 0)} · timed out {queue.get('timeouts', 0)}"
            f" · turned away {queue.get('full', 0)}")
    return [head, done]


def backup_text(pool: dict) -> str:
    """Whether a pool's backups serve now, and the rule (backup_threshold)."""
    backends = pool.get("backends") or []
    if not any(b.get("backup") for b in backends):
        return ""
    threshold = float(pool.get("backup_threshold") or 0)
    rule = (f"primaries eligible under {threshold:g}" if threshold
            else "no primary is eligible")
    if pool.get("backup_active"):
        return f"BACKUPS SERVING: {rule}"
    return f"backups standby: serve when {rule}"


def zone_text(pool: dict) -> str:
    """Zone-aware routing of a pool whose backends have zones (cross_zone)."""
    if not any(b.get("zone") for b in pool.get("backends") or []):
        return ""
    if pool.get("cross_zone", True):
        return "cross-zone on: every zone serves every listener"
    return "cross-zone off: a listener picks in its own zone first"


def _match_text(match: dict | None) -> str:
    if not match:
        return "every request"
    parts = []
    if match.get("host"):
        parts.append(f"host {match['host']}")
    if match.get("path_prefix"):
        parts.append(f"path {match['path_prefix']}*")
    if match.get("path_regex"):
        parts.append(f"path ~ {match['path_regex']}")
    if match.get("methods"):
        parts.append("/".join(match["methods"]))
    for key in ("headers", "query", "cookies"):
        for name, value in (match.get(key) or {}).items():
            parts.append(f"{key[:-1] if key != 'query' else 'query'} {name}={value}")
    return ", ".join(parts) or "every request"


def _rate_text(rate: float | None) -> str:
    if rate is None:
        return ""
    if rate >= 10:
        return f"{rate:.0f} req/s"
    if rate >= 0.05:
        return f"{rate:.1f} req/s"
    return ""


KIND_WORDS = {"tcp": "TCP", "tls-passthrough": "TLS passthrough", "websocket": "WebSocket",
              "http": "HTTP", "tls": "TLS handshake"}


def listener_tls(state: dict, name: str, listener: dict) -> dict:
    """A listener's TLS as GET /state's `tls` view says, else as its config says."""
    view = (state.get("tls") or {}).get(name)
    if view:
        return view
    tls = listener.get("tls")
    if tls is None:
        config = ((state.get("config") or {}).get("listeners") or {}).get(name) or {}
        tls = config.get("tls")
    if not tls:
        return {"mode": "none"}
    if tls.get("mode") == "passthrough":
        return {"mode": "passthrough", "sni": dict(tls.get("sni") or {}),
                "default_pool": listener.get("pool"),
                "unknown_sni": tls.get("unknown_sni", "default")}
    certs = [{"label": c.get("pki") or c.get("cert") or "?",
              "names": c.get("names") or ([c["pki"]] if c.get("pki") else []),
              "default": bool(c.get("default"))} for c in tls.get("certificates") or []]
    auth = tls.get("client_auth") or ("required" if tls.get("client_ca") else None)
    return {"mode": "terminate", "certificates": certs, "client_auth": auth,
            "unknown_sni": tls.get("unknown_sni", "default"),
            "min_version": tls.get("min_version")}


def _names_text(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" +{len(names) - limit}" if len(names) > limit else "")


def tls_lines(tls: dict) -> list[str]:
    """What a listener's node says about its TLS mode (plain text, one item a line)."""
    mode = tls.get("mode", "none")
    if mode == "none":
        return ["no TLS"]
    if mode == "passthrough":
        return ["TLS passthrough: routes on SNI, never decrypts"]
    names: list[str] = []
    for cert in tls.get("certificates") or []:
        names += [n for n in cert.get("names") or [cert.get("label", "?")] if n not in names]
    lines = [f"TLS terminate: {_names_text(names)}" if names else "TLS terminate"]
    if tls.get("client_auth"):
        lines.append(f"mTLS: client certificate {tls['client_auth']}")
    return lines


def _open_text(counts: dict | None) -> str:
    """"2 TCP, 1 WebSocket open" from GET /state's connections.by_listener entry."""
    parts = [f"{n} {KIND_WORDS.get(kind, kind)}" for kind, n in (counts or {}).items()
             if n and kind != "http"]
    return f"open now: {', '.join(parts)}" if parts else ""


def _pool_tls_text(pool_config: dict) -> str:
    tls = pool_config.get("tls")
    if tls:
        return ("re-encrypts to backends (verified)" if tls.get("verify", True)
                else "re-encrypts to backends (NOT verified)")
    if any(b.get("tls") for b in pool_config.get("backends") or []):
        return "re-encrypts to some backends"
    return ""


def _backend_tls_text(pool_config: dict, name: str) -> str:
    for b in pool_config.get("backends") or []:
        if b.get("name") == name and b.get("tls"):
            return "TLS, verified" if b["tls"].get("verify", True) else "TLS, NOT verified"
    return ""


def topology(state: dict, rates: dict[str, float] | None = None,
             direction: str = "LR") -> str:
    """Flowchart of listeners -> routes -> pools -> backends from GET /state.

    Each listener says its layer (L7 http routes requests, L4 tcp relays
    connections) and its TLS mode; an L4 listener links straight to its pool,
    or through its server names (SNI) with TLS passthrough. `rates` (backend
    name -> requests/s, from the bridge) labels pool->backend edges, and the
    open connection counts do in pools behind an L4 listener; edges into
    backends that cannot be picked are dotted, and so are the edges of routes
    no listener uses (kept for a flip back to L7).
    """
    rates = rates or {}
    listeners: dict = state.get("listeners") or {}
    routes: dict = state.get("routes") or {}
    pools: dict = state.get("pools") or {}
    config = state.get("config") or {}
    pool_configs: dict = config.get("pools") or {}
    by_listener = ((state.get("connections") or {}).get("by_listener") or {})
    lines = [f"flowchart {direction if direction in ('LR', 'TB', 'TD', 'RL', 'BT') else 'LR'}"]
    edges: list[str] = []
    dotted: list[int] = []
    pool_ids = {name: f"p{i}" for i, name in enumerate(pools)}
    route_ids = {name: f"r{i}" for i, name in enumerate(routes)}
    used_routes: list[str] = []
    l4_pools: set[str] = set()
    classes: list[str] = []  # `class id backup` lines, after every node is placed

    if not listeners and not pools:
        lines.append('  empty["no listeners or pools configured"]:::terminal')

    for i, (name, listener) in enumerate(listeners.items()):
        lid = f"l{i}"
        tcp = listener.get("protocol") == "tcp"
        layer = "L4 · tcp" if tcp else "L7 · http"
        bind = escape(listener.get("bind", ""), 60)
        tls = listener_tls(state, name, listener)
        label = [f"listener {escape(name, 40)}", f"{layer} · {bind}",
                 *(escape(line, 90) for line in tls_lines(tls))]
        opened = _open_text(by_listener.get(name))
        if opened:
            label.append(escape(opened, 60))
        if listener.get("zone"):
            label.append(f"zone {escape(listener['zone'], 40)}")
        cls = "listener4" if tcp else "listener"
        lines.append(f'  {lid}(["{"<br/>".join(label)}"]):::{cls}')
        if tcp or listener.get("pool"):
            pool = listener.get("pool")
            sni = (tls.get("sni") or {}) if tls.get("mode") == "passthrough" else {}
            by_pool: dict[str, list[str]] = {}
            for server_name, target in sni.items():
                by_pool.setdefault(target, []).append(server_name)
            for target, names in by_pool.items():
                if target in pool_ids:
                    l4_pools.add(target)
                    edges.append(f'  {lid} -->|"SNI {escape(_names_text(names, 2), 60)}"| '
                                 f"{pool_ids[target]}")
            if pool in pool_ids:
                l4_pools.add(pool)
                what = ("other names" if sni else "any name") if tls.get("mode") == \
                    "passthrough" else "every connection"
                edges.append(f'  {lid} -->|"{what}"| {pool_ids[pool]}')
            elif sni and tls.get("unknown_sni") == "refuse":
                lines.append(f'  {lid}_refuse["other names: refused"]:::terminal')
                dotted.append(len(edges))
                edges.append(f"  {lid} -.-> {lid}_refuse")
        for rname in listener.get("routes") or []:
            if rname in route_ids:
                edges.append(f"  {lid} --> {route_ids[rname]}")
                if rname not in used_routes:
                    used_routes.append(rname)

    for rname, route in routes.items():
        rid = route_ids[rname]
        unused = bool(listeners) and rname not in used_routes
        match = escape(_match_text(route.get("match")), 80)
        prio = route.get("priority", 0)
        ptext = f" · priority {prio}" if prio else ""
        tail = "<br/>no listener uses it" if unused else ""
        lines.append(f'  {rid}{{{{"route {escape(rname, 40)}{ptext}<br/>{match}{tail}"}}}}'
                     f':::{"unused" if unused else "route"}')
        arrow = "-.->" if unused else "-->"

        def route_edge(text: str) -> None:
            if unused:
                dotted.append(len(edges))
            edges.append(text)

        if route.get("forward") and route["forward"] in pool_ids:
            route_edge(f"  {rid} {arrow} {pool_ids[route['forward']]}")
        for target in route.get("split") or []:
            pool = target.get("pool")
            if pool in pool_ids:
                route_edge(f'  {rid} {arrow}|"split weight {escape(target.get("weight", 0), 10)}"| '
                           f"{pool_ids[pool]}")
        if route.get("respond"):
            status = escape(route["respond"].get("status", 200), 5)
            lines.append(f'  {rid}_t["answers {status} itself"]:::terminal')
            route_edge(f"  {rid} {arrow} {rid}_t")
        if route.get("redirect"):
            red = route["redirect"]
            lines.append(f'  {rid}_t["redirect {escape(red.get("status", 302), 5)} to '
                         f'{escape(red.get("location", ""), 60)}"]:::terminal')
            route_edge(f"  {rid} {arrow} {rid}_t")

    for pname, pool in pools.items():
        pid = pool_ids[pname]
        pconf = pool_configs.get(pname) or {}
        l4 = pname in l4_pools
        algo = escape(pool.get("algorithm") or (pool.get("balancer") or {}).get("algorithm", "?"), 40)
        extra = []
        if pool.get("sticky"):
            extra.append(f"sticky: {escape(pool['sticky'].get('mode', '?'), 20)}")
        if pool.get("panic"):
            extra.append("PANIC: failing open")
        backends = pool.get("backends") or []
        eligible = sum(1 for b in backends if b.get("eligible"))
        extra.append(f"{eligible}/{len(backends)} eligible")
        more = []
        if l4:
            open_now = sum(int(b.get("active_connections") or 0) for b in backends)
            more.append(f"L4: {open_now} open connection{'s' if open_now != 1 else ''}")
        tls_note = _pool_tls_text(pconf)
        if tls_note:
            more.append(tls_note)
        if pconf.get("proxy_protocol"):
            more.append(f"PROXY protocol {escape(pconf['proxy_protocol'], 4)}")
        more += queue_text(pool.get("queue"))
        more += [t for t in (backup_text(pool), zone_text(pool)) if t]
        more_text = "".join(f"<br/>{escape(m, 60)}" for m in more)
        lines.append(f'  {pid}[["pool {escape(pname, 40)}<br/>{algo}<br/>'
                     f'{" · ".join(extra)}{more_text}"]]:::pool')
        if not backends:
            lines.append(f'  {pid}_none["no backends"]:::terminal')
            edges.append(f"  {pid} --> {pid}_none")
        backups_on = bool(pool.get("backup_active"))
        # Backends with a zone go in one subgraph per zone (in order of first sight);
        # the rest stay outside. Subgraph ids are generated, titles escaped.
        zones: dict[str, list[str]] = {}
        for j, backend in enumerate(backends):
            bid = f"b{pid[1:]}_{j}"
            label = _backend_label(backend, l4, _backend_tls_text(pconf, backend.get("name")))
            node = f'  {bid}["{label}"]:::{backend_class(backend)}'
            if backend.get("zone"):
                zones.setdefault(str(backend["zone"]), []).append(node)
            else:
                lines.append(node)
            if backend.get("backup"):
                classes.append(f"  class {bid} backup")
            if l4:
                conns = int(backend.get("active_connections") or 0)
                edge_text = f"{conns} conn" if conns else ""
            else:
                edge_text = _rate_text(rates.get(backend.get("name", "")))
            if backend.get("backup"):
                # A backup is eligible by health yet out of the pick until backups serve.
                role = _backup_role(backend, backups_on)
                edge_text = f"{role} · {edge_text}" if edge_text else role
                if not backups_on:
                    dotted.append(len(edges))
                    edges.append(f'  {pid} -.->|"{edge_text}"| {bid}')
                    continue
            if backend.get("eligible", True):
                edges.append(f'  {pid} -->|"{edge_text}"| {bid}' if edge_text
                             else f"  {pid} --> {bid}")
            else:
                dotted.append(len(edges))
                edges.append(f'  {pid} -.->|"{edge_text}"| {bid}' if edge_text
                             else f"  {pid} -.-> {bid}")
        for k, (zone, nodes) in enumerate(zones.items()):
            lines.append(f'  subgraph {pid}_z{k}["zone {escape(zone, 40)}"]')
            lines.extend("  " + node for node in nodes)
            lines.append("  end")

    lines.extend(edges)
    lines.extend(classes)
    for index in dotted:
        lines.append(f"  linkStyle {index} stroke:#9ca3af,stroke-width:1px")
    for name, style in CLASS_DEFS.items():
        lines.append(f"  classDef {name} {style}")
    return "\n".join(lines)


# ---------------------------------------------------------------- one request

def _pick_lines(event: dict, question: str) -> list[str]:
    """The proxy asking the balancer, and the balancer's candidates and why (a request's and
    a connection's sequence draw the pick the same way)."""
    cands = event.get("candidates") or []
    noun = "candidate" if len(cands) == 1 else "candidates"
    lines = [f"  P->>LB: {question} ({len(cands)} {noun})"]
    if cands:
        lines.append(f"  Note over LB: {escape(_candidates_text(cands), 160)}")
    why = [t for t in (sticky_text(event.get("sticky")), _inputs_text(event.get("inputs"))) if t]
    if why:
        lines.append(f"  Note over LB: {escape(' · '.join(why), 160)}")
    return lines


def _candidates_text(candidates: list, limit: int = 8) -> str:
    parts = []
    for c in candidates[:limit]:
        name = c.get("name", "?")
        if c.get("eligible", True):
            parts.append(f"{name} \u2713")
        else:
            why = c.get("intent") if c.get("intent") not in (None, "active") else c.get("health")
            parts.append(f"{name} \u2717 {why}")
    if len(candidates) > limit:
        parts.append(f"+{len(candidates) - limit} more")
    return ", ".join(parts)


def sticky_text(sticky: dict | None) -> str:
    if not sticky:
        return ""
    mode = sticky.get("mode", "sticky")
    if sticky.get("hit"):
        return f"sticky ({mode}) hit: {sticky.get('target')}"
    reason = sticky.get("reason") or "no sticky target yet"
    return f"sticky ({mode}) miss: {reason}"


def _sequence_header(event: dict, listener_kind: str, retries: list, backend: str | None,
                     pool: str | None) -> tuple[dict[str, str], list[str]]:
    """The participants of a request's or connection's path: client, proxy, pool, and
    every backend tried (retries first, then the one that answered), each with its id."""
    participants: list[str] = []
    for name in [attempt.get("backend") for attempt in retries] + [backend]:
        if name and name not in participants:
            participants.append(name)
    pid = {name: f"S{i}" for i, name in enumerate(participants)}
    out = ["sequenceDiagram",
           f"  participant C as client {escape(event.get('client', '?'), 48)}",
           f"  participant P as proxy · {listener_kind} "
           f"{escape(event.get('listener', '?'), 40)}"]
    if pool:
        out.append(f"  participant LB as pool {escape(pool, 40)} · "
                   f"{escape(event.get('algorithm') or '?', 40)}")
    for name in participants:
        out.append(f"  participant {pid[name]} as backend {escape(name, 40)}")
    return pid, out


def request_sequence(event: dict) -> str:
    """A sequence diagram of one request event (type request) as the proxy saw it."""
    timings = event.get("timings") or {}
    retries = event.get("retries") or []
    backend = event.get("backend")
    status = event.get("status", 0)
    pool = event.get("pool")
    route = event.get("route")
    method = escape(event.get("method", "?"), 10)
    path = escape(event.get("path", "/"), 60)

    pid, out = _sequence_header(event, "listener", retries, backend, pool)

    host = event.get("host")
    first = f"{method} {path}"
    if host:
        first += f" · host {escape(host, 40)}"
    out.append(f"  C->>P: {first}")
    rid = event.get("request_id")
    if rid:
        out.append(f"  Note left of P: request id {escape(rid, 40)}")

    if route:
        at = f" at {_ms(timings['route_matched'])}" if "route_matched" in timings else ""
        out.append(f"  Note over P: route {escape(route, 40)} matched{at}")
    elif event.get("proxy_error"):
        out.append("  Note over P: no route matched")

    if pool:
        out += _pick_lines(event, "pick a backend")
        if backend:
            at = f" at {_ms(timings['backend_picked'])}" if "backend_picked" in timings else ""
            out.append(f"  LB-->>P: {escape(backend, 40)}{at}")
        else:
            out.append(f"  LB--xP: no backend: {escape(event.get('error') or 'none eligible', 100)}")

    for n, attempt in enumerate(retries, 1):
        name = attempt.get("backend")
        if name in pid:
            out.append(f"  P->>{pid[name]}: {method} {path} (attempt {n})")
            out.append(f"  {pid[name]}--xP: {escape(attempt.get('error') or 'failed', 100)}")
        else:
            out.append(f"  Note over P: attempt {n} failed: "
                       f"{escape(attempt.get('error') or 'failed', 100)}")
        out.append("  Note over P: retry")

    if backend:
        sid = pid[backend]
        label = f"{method} {path}"
        if retries:
            label += f" (attempt {len(retries) + 1})"
        if "connected" in timings:
            label += f" · connected at {_ms(timings['connected'])}"
        out.append(f"  P->>{sid}: {label}")
        if event.get("proxy_error") or not status:
            err = escape(event.get("error") or "no response", 100)
            out.append(f"  {sid}--xP: {err}")
        else:
            fb = f" · first byte at {_ms(timings['first_byte'])}" if "first_byte" in timings else ""
            out.append(f"  {sid}-->>P: {escape(status, 5)}{fb}")

    made = " made by the proxy" if event.get("proxy_error") else ""
    total = _ms(event.get("latency_ms", timings.get("done", 0)))
    answer = f"{escape(status, 5)}{made} · {total}" if status else f"no response · {total}"
    out.append(f"  P-->>C: {answer}")
    term = event.get("termination") or "--"
    if term != "--" or event.get("error"):
        note = f"termination {term}: {explain_termination(term)}"
        if event.get("error") and not backend:
            note += f" ({event['error']})"
        out.append(f"  Note over C,P: {escape(note, 160)}")
    return "\n".join(out)


# ---------------------------------------------------------------- one L4 connection

def bytes_text(value: object) -> str:
    try:
        n = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def duration_text(ms: object) -> str:
    try:
        v = float(ms)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"
    if v >= 60_000:
        return f"{int(v // 60_000)} min {v % 60_000 / 1000:.0f} s"
    if v >= 1000:
        return f"{v / 1000:.1f} s"
    return _ms(v)


CLOSED_BY = {"client": "the client closed it", "backend": "the backend closed it",
             "proxy": "the proxy closed it", "idle": "ended idle"}


def connection_sequence(event: dict) -> str:
    """A sequence diagram of one closed L4 connection (a `connection` event)."""
    kind = event.get("kind") or "tcp"
    tls = event.get("tls") or {}
    backend = event.get("backend")
    pool = event.get("pool")
    retries = event.get("retries") or []
    pid, out = _sequence_header(event, "L7 listener" if kind == "h2" else "L4 listener",
                                retries, backend, pool)

    if kind == "tls-passthrough" or tls.get("mode") == "passthrough":
        sni = tls.get("sni")
        out.append(f"  C->>P: TCP connect, then TLS ClientHello"
                   f"{' · SNI ' + escape(sni, 60) if sni else ' without a server name'}")
        matched = tls.get("matched")
        if matched:
            how = {"exact": "matched tls.sni exactly", "default": "not in tls.sni: default pool",
                   "refused": "not in tls.sni: refused"}.get(matched, escape(matched, 40))
            out.append(f"  Note over P: reads the name only, decrypts nothing: {how}"
                       + (f" → pool {escape(pool, 40)}" if pool and matched != "refused" else ""))
    elif kind == "tls":
        sni = tls.get("sni")
        out.append(f"  C->>P: TLS ClientHello{' · SNI ' + escape(sni, 60) if sni else ''}")
    elif kind == "udp":
        out.append("  C->>P: first datagram: a new flow (client address and port)")
    elif kind == "h2":
        out.append("  C->>P: HTTP/2 connection")
        out.append(f"  Note over P: {int(event.get('streams') or 0)} stream(s), each a request "
                   "routed and balanced on its own")
    else:
        out.append("  C->>P: TCP connect")
    out.append(f"  Note left of P: connection id {escape(event.get('connection_id', '?'), 40)}")

    if pool:
        out += _pick_lines(event, "pick a backend for this connection")
        if backend:
            out.append(f"  LB-->>P: {escape(backend, 40)}")
        elif not retries:
            out.append(f"  LB--xP: no backend: {escape(event.get('error') or 'none eligible', 100)}")

    for n, attempt in enumerate(retries, 1):
        name = attempt.get("backend")
        if name in pid:
            out.append(f"  P->>{pid[name]}: connect (attempt {n})")
            out.append(f"  {pid[name]}--xP: {escape(attempt.get('error') or 'failed', 100)}")
        out.append("  Note over P: try another backend")

    error = event.get("error")
    closed_by = event.get("closed_by") or ""
    if backend:
        sid = pid[backend]
        connect = event.get("connect_ms")
        label = ("UDP socket to it (no handshake): the flow's datagrams follow" if kind == "udp"
                 else "TCP connect" + (f" · {_ms(connect)}" if connect is not None else ""))
        if event.get("proxy_protocol"):
            label += f" · PROXY {escape(event['proxy_protocol'], 4)} header first"
        out.append(f"  P->>{sid}: {label}")
        sent, back = event.get("bytes_in") or 0, event.get("bytes_out") or 0
        sent_text = f"{bytes_text(sent)} from the client" if sent else "the client sent nothing"
        back_text = f"{bytes_text(back)} from the backend" if back else "the backend sent nothing"
        out.append(f"  C->>{sid}: {sent_text}, relayed unread")
        out.append(f"  {sid}-->>C: {back_text}, relayed back")
        if closed_by == "client":
            out.append(f"  C-)P: closes{' (reset)' if error else ''}")
            out.append(f"  P-){sid}: close passed on")
        elif closed_by == "backend":
            out.append(f"  {sid}-)P: closes{' (reset)' if error else ''}")
            out.append("  P-)C: close passed on")
        elif closed_by == "proxy":
            out.append(f"  Note over P: {escape(error or 'the proxy closed it', 140)}")
            out.append("  P-)C: close")
            out.append(f"  P-){sid}: close")
        elif closed_by == "idle":  # UDP has no close: the flow is forgotten
            out.append(f"  Note over P: {escape(error or 'idle', 140)}")
    elif error:
        out.append(f"  P--xC: {escape(error, 140)}")
    summary = f"{duration_text(event.get('duration_ms'))} · {CLOSED_BY.get(closed_by, 'closed')}"
    if error and backend:
        summary += f": {error}"
    out.append(f"  Note over C,P: {escape(summary, 160)}")
    return "\n".join(out)


# ---------------------------------------------------------------- one backend's health

def _probe_step(run: list[dict]) -> tuple[str, str]:
    last = run[-1]
    count = sum(int(p.get("count", 1) or 1) for p in run)
    times = f" (×{count})" if count > 1 else ""
    detail = escape(last.get("detail") or ("ok" if last.get("ok") else "failed"), 80)
    if last.get("ok"):
        return "ok", f"\u2713 {detail}{times}"
    return "fail", f"\u2717 {detail}{times}"


def health_episode(events: Iterable[dict], backend: str, pool: str | None = None,
                   limit: int = 30) -> str:
    """A sequence diagram of one backend's health_probe and state_change events.

    Consecutive successful probes fold into one line; consecutive failures with
    the same detail fold too. Only the newest `limit` steps are drawn.
    """
    relevant = [e for e in events
                if e.get("backend") == backend and (pool is None or e.get("pool") == pool)
                and e.get("type") in ("health_probe", "state_change", "drain")]
    relevant.sort(key=lambda e: e.get("ts", 0))
    if pool is None:
        pool = next((e.get("pool") for e in relevant if e.get("pool")), None)

    steps: list[list[str]] = []
    run: list[dict] = []

    def flush() -> None:
        if not run:
            return
        kind, text = _probe_step(run)
        arrow = "-->>" if kind == "ok" else "--x"
        steps.append(["  HC->>B: probe", f"  B{arrow}HC: {text}"])
        run.clear()

    for e in relevant:
        if e["type"] == "health_probe":
            if run and (bool(run[-1].get("ok")) != bool(e.get("ok")) or
                        (not e.get("ok") and run[-1].get("detail") != e.get("detail"))):
                flush()
            run.append(e)
            continue
        flush()
        if e["type"] == "drain":
            steps.append([f"  Note over P: drain {escape(e.get('what', ''), 30)}"
                          + (f": {escape(e.get('detail'), 100)}" if e.get("detail") else "")])
            continue
        kind = e.get("kind", "health")
        change = f"{escape(e.get('old', '?'), 20)} → {escape(e.get('new', '?'), 20)}"
        cause = escape(e.get("cause") or "", 120)
        if kind == "health":
            steps.append([f"  Note over HC,P: health {change}" + (f": {cause}" if cause else "")])
            new = e.get("new")
            if new == "unhealthy":
                steps[-1].append(f"  HC-)P: take {escape(backend, 40)} out of rotation")
            elif new == "healthy":
                steps[-1].append(f"  HC-)P: put {escape(backend, 40)} back in rotation")
        else:
            steps.append([f"  Note over P: {escape(kind, 20)} {change}" + (f": {cause}" if cause else "")])
    flush()

    out = ["sequenceDiagram",
           f"  participant HC as health checker{' · pool ' + escape(pool, 40) if pool else ''}",
           f"  participant B as backend {escape(backend, 40)}",
           f"  participant P as pool {escape(pool, 40) if pool else '?'} balancer"]
    if not steps:
        out.append(f"  Note over HC,P: no probes or state changes seen for {escape(backend, 40)} yet")
        return "\n".join(out)
    if len(steps) > limit:
        out.append(f"  Note over HC,P: {len(steps) - limit} earlier steps not shown")
        steps = steps[-limit:]
    for step in steps:
        out.extend(step)
    return "\n".join(out)
