"""What the live dashboard shows: first paint, page context, per-request and health diagrams.

The page gets its data in three ways, all built here:

1. `page_context()` renders the HTML shell (no call to the proxy: the page
   appears at once even when the proxy is down).
2. Over the WebSocket `ws/lab/<sandbox>/`: `first_paint()` once on connect
   (state, topology, recent requests, closed L4 connections, lifecycle events
   and the live connections from the proxy),
   then the bridge's ticks (`tick_for_browser()`).
3. On demand over HTTP: one request's or one L4 connection's sequence diagram,
   one backend's health episode (`request_diagram()`, `connection_diagram()`,
   `health_diagram()`), and `first_paint()` again as a polling fallback when
   WebSockets are blocked.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
from django.conf import settings

from explainer import selectors
from labs import diagrams
from explainer.bridge import LIFECYCLE_TYPES, slim_state
from labs.sandbox.admin_client import AdminError, AsyncAdminClient, Refused
from explainer.services.controls import FAULTS, TRAFFIC_PROFILES
from explainer.services.sandboxes import SandboxError, SandboxRef, get_sandbox, parts_of

RECENT_REQUESTS = 60
RECENT_EVENTS = 400
# stream_gap is made by the stream itself, it cannot be asked for.
REPLAY_TYPES = [t for t in LIFECYCLE_TYPES if t != "stream_gap"] + ["health_probe", "connection"]
# A connection event stays in the proxy's recent-events ring (1000 non-request events).
CONNECTION_LOOKBACK = 1000


def bridge_mode() -> str:
    return "embedded" if settings.LBLAB_EMBEDDED_BRIDGE else "external"


def page_context(sandbox_id: str) -> dict:
    return {
        "sandbox_id": sandbox_id,
        "ws_path": f"/ws/lab/{sandbox_id}/",
        "api_base": f"/api/{sandbox_id}/",
        "algorithms": selectors.algorithms(),
        "faults": [{"name": k, "label": v[0], "help": v[1]} for k, v in FAULTS.items()],
        "profiles": [{"name": k, "label": v} for k, v in TRAFFIC_PROFILES.items()],
        "bridge_mode": bridge_mode(),
    }


async def _parts(sandbox: SandboxRef) -> dict | None:
    if not sandbox.managed:
        return None
    try:
        return await asyncio.to_thread(parts_of, sandbox.id)
    except Exception as exc:  # the supervisor's own failure is worth showing, not hiding
        return {"sandbox": {"alive": False, "detail": f"part status unavailable: {exc}"}}


async def first_paint(sandbox_id: str) -> dict:
    """Everything the page needs before the first tick; never raises for a dead part."""
    paint = {
        "kind": "first_paint", "v": 1, "sandbox": sandbox_id, "ts": time.time(),
        "bridge": bridge_mode(),
        "proxy": {"reachable": False, "detail": ""},
        "state": None, "config": None, "diagram": None,
        "requests": [], "connection_events": [], "events": [], "probes": [], "parts": None,
        "connections": None, "proxy_url": None,
    }
    try:
        sandbox = await asyncio.to_thread(get_sandbox, sandbox_id)
    except SandboxError as exc:
        paint["proxy"]["detail"] = exc.message
        return paint
    paint["proxy_url"] = sandbox.proxy_url
    paint["parts"] = await _parts(sandbox)
    client = AsyncAdminClient(sandbox.admin_url, timeout=settings.LBLAB_ADMIN_TIMEOUT)
    async with aiohttp.ClientSession() as session:
        try:
            state = await client.state(session=session)
        except AdminError as exc:
            paint["proxy"]["detail"] = f"proxy unreachable: {exc.message}"
            return paint
        paint["proxy"] = {"reachable": True, "detail": f"admin API at {client.base_url} answers"}
        paint["state"] = slim_state(state)
        paint["config"] = state.get("config")
        paint["diagram"] = diagrams.topology(state)
        try:
            paint["connections"] = {**await client.connections(session=session),
                                    "ts": time.time()}
        except Refused as exc:  # an older proxy without GET /connections
            paint["connections"] = {"unavailable": exc.message}
        except AdminError:
            paint["connections"] = None
        try:
            paint["requests"] = await client.recent_requests(RECENT_REQUESTS, session=session)
            past = await client.replay(types=REPLAY_TYPES,
                                       count=RECENT_EVENTS, session=session)
        except AdminError as exc:
            paint["events"] = [{"type": "warning", "source": "site", "ts": time.time(),
                                "message": f"could not read recent events: {exc.message}"}]
            return paint
    paint["events"] = [e for e in past if e.get("type") in LIFECYCLE_TYPES]
    paint["probes"] = [e for e in past if e.get("type") == "health_probe"]
    paint["connection_events"] = [e for e in past if e.get("type") == "connection"][
        -RECENT_REQUESTS:]
    return paint


def tick_for_browser(message: dict) -> dict:
    """A bridge tick as the browser gets it: `kind` instead of the channel `type`."""
    out = {k: v for k, v in message.items() if k != "type"}
    out["kind"] = "tick"
    return out


async def request_diagram(sandbox_id: str, request_id: str) -> dict:
    sandbox = await asyncio.to_thread(get_sandbox, sandbox_id)
    client = AsyncAdminClient(sandbox.admin_url, timeout=settings.LBLAB_ADMIN_TIMEOUT)
    event = await client.request(request_id)
    return {"request": event, "diagram": diagrams.request_sequence(event),
            "termination": diagrams.explain_termination(event.get("termination"))}


async def live_connections(sandbox_id: str) -> dict:
    sandbox = await asyncio.to_thread(get_sandbox, sandbox_id)
    client = AsyncAdminClient(sandbox.admin_url, timeout=settings.LBLAB_ADMIN_TIMEOUT)
    return {**await client.connections(), "ts": time.time()}


async def connection_diagram(sandbox_id: str, connection_id: str) -> dict:
    """One closed L4 connection's path, found in the proxy's recent events."""
    sandbox = await asyncio.to_thread(get_sandbox, sandbox_id)
    client = AsyncAdminClient(sandbox.admin_url, timeout=settings.LBLAB_ADMIN_TIMEOUT)
    past = await client.replay(types=["connection"], count=CONNECTION_LOOKBACK, deadline=2.0)
    event = next((e for e in reversed(past) if e.get("connection_id") == connection_id), None)
    if event is None:
        raise Refused(f"no closed connection with id {connection_id!r} among the proxy's "
                      f"recent events (it is still open, or older than the newest "
                      f"{CONNECTION_LOOKBACK} non-request events)",
                      [{"path": "id", "message": "not found"}], status=404)
    return {"connection": event, "diagram": diagrams.connection_sequence(event)}


async def health_diagram(sandbox_id: str, pool: str, backend: str) -> dict:
    sandbox = await asyncio.to_thread(get_sandbox, sandbox_id)
    client = AsyncAdminClient(sandbox.admin_url, timeout=settings.LBLAB_ADMIN_TIMEOUT)
    past = await client.replay(types=["health_probe", "state_change", "drain"],
                               count=2000, deadline=2.0)
    events = selectors.backend_events(past, pool, backend)
    return {"pool": pool, "backend": backend, "events": len(events),
            "diagram": diagrams.health_episode(events, backend, pool)}
