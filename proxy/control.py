"""The admin API: state, control verbs, live events and metrics over HTTP + JSON.

Theory of operation. An aiohttp application runs inside the proxy's own event
loop (`start_admin(server)`), so handlers touch the same `Runtime` the data
plane reads, without locks. Handlers are thin: parse the request, call one
Runtime verb, render the answer. Every change goes through `Runtime`, which
validates the *whole* resulting config exactly as a YAML file would be
validated, and either swaps it in (publishing an AdminChange event) or raises
ConfigError and changes nothing; this module only turns that into HTTP
(422 with every error and its path).

Errors are always JSON: {"error": "...", "errors": [{"path", "message"}]},
with a message that says what to change. 400 malformed input, 401 missing or
wrong token, 404 unknown pool/backend/request/endpoint, 422 config refused,
501 a part of the proxy this verb needs is not running.

`server` is any object with `.runtime`, `.bus`, `.metrics` (Metrics or None)
and optionally `.drains` (proxy.drain.DrainManager: start(pool, backend,
remove=False) -> dict, state()), `.live_connections()` (GET /connections),
`.connection_counts()` and `.tls_view()` (both in GET /state); other
attributes are not read.
The route table is `ROUTES`, below the handlers.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass, field
from functools import partial

from aiohttp import web

from proxy import configtext
from proxy.config import ConfigError, load_data, parse_config, to_data
from proxy.events import REQUEST_MODES, STREAM_TYPES, Event

log = logging.getLogger("proxy.control")

_dumps = partial(json.dumps, default=str)
MAX_BODY = 4 * 1024 * 1024
REPLAY_MAX = 10_000
# GET /events?requests=sample: full request events per second, and how often
# the request_stats line with the exact counts is sent.
SAMPLE_MAX_PER_S = 200
STATS_INTERVAL_MS = 250
# How often an idle event stream checks its client is still there (and, for
# SSE, sends a comment line so intermediaries keep the connection open).
STREAM_IDLE_CHECK = 15.0
SAMPLED_COALESCE = 0.02  # seconds a sampled stream gathers lines between writes


class ApiError(Exception):
    """An error a client caused, rendered as JSON with `status`."""

    def __init__(self, status: int, message: str, path: str = "",
                 errors: list[dict] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors if errors is not None else [{"path": path, "message": message}]

    def as_json(self) -> dict:
        return {"error": self.message, "errors": self.errors}


@dataclass
class AdminContext:
    """What the handlers share: the server's parts and the open streams."""

    server: object
    streams: set = field(default_factory=set)  # handler tasks of open /events streams

    @property
    def runtime(self):
        return self.server.runtime

    @property
    def bus(self):
        return self.server.bus

    def part(self, name: str, what: str):
        """An optional part of the server, or 501 saying it is not running."""
        value = getattr(self.server, name, None)
        if value is None:
            raise ApiError(501, f"{what} needs server.{name}, which this proxy is not running")
        return value


CTX = web.AppKey("ctx", AdminContext)


def ctx_of(request: web.Request) -> AdminContext:
    return request.app[CTX]


# ---------------------------------------------------------------- rendering

def json_response(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def error_response(status: int, message: str, errors: list[dict] | None = None) -> web.Response:
    body = {"error": message,
            "errors": errors if errors is not None else [{"path": "", "message": message}]}
    return json_response(body, status=status)


def full_state(ctx: AdminContext) -> dict:
    runtime = ctx.runtime
    state = runtime.state()
    state["config"] = to_data(runtime.config)
    state["events_published"] = ctx.bus.published
    state["subscribers"] = ctx.bus.subscriber_count
    drains = getattr(ctx.server, "drains", None)
    state["drains"] = drains.state() if drains is not None else None
    health = getattr(ctx.server, "health", None)
    state["health"] = health.state() if health is not None else None
    counts = getattr(ctx.server, "connection_counts", None)
    state["connections"] = counts() if counts is not None else None
    tls_view = getattr(ctx.server, "tls_view", None)
    state["tls"] = tls_view() if tls_view is not None else None
    return state


# ---------------------------------------------------------------- parsing

async def read_json_object(request: web.Request, example: str) -> dict:
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, f"this endpoint needs a JSON object body, e.g. {example}")
    try:
        data = load_data(raw, as_json=True, what="the body")
    except ConfigError as exc:
        raise ApiError(400, f"body is not valid JSON ({exc.errors[0][1]}); send a JSON "
                            f"object, e.g. {example}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"body must be a JSON object, e.g. {example}; "
                            f"got {type(data).__name__}")
    return data


def require_pool(ctx: AdminContext, pool: str) -> None:
    if pool not in ctx.runtime.pools:
        known = ", ".join(sorted(ctx.runtime.pools)) or "none"
        raise ApiError(404, f"no pool named {pool!r}; pools: {known}", path=f"pools.{pool}")


def require_backend(ctx: AdminContext, pool: str, name: str) -> None:
    require_pool(ctx, pool)
    backends = ctx.runtime.pools[pool].backends
    if name not in backends:
        known = ", ".join(backends) or "none"
        raise ApiError(404, f"no backend named {name!r} in pool {pool!r}; backends: {known}",
                       path=f"pools.{pool}.backends")


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"?{name} must be a whole number from {low} to {high}, "
                            f"got {raw!r}", path=name) from None
    if not low <= value <= high:
        raise ApiError(400, f"?{name} must be from {low} to {high}, got {value}", path=name)
    return value


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------- read-only

async def index(request: web.Request) -> web.Response:
    return json_response({
        "service": "lblab proxy admin API",
        "endpoints": [{"method": m, "path": p, "summary": s} for m, p, _, s in ROUTES],
        "auth": "Authorization: Bearer <admin.token> on every request when admin.token is set",
    })


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def get_state(request: web.Request) -> web.Response:
    return json_response(full_state(ctx_of(request)))


async def get_config(request: web.Request) -> web.Response:
    data = to_data(ctx_of(request).runtime.config)
    fmt = request.query.get("format", "")
    if fmt not in ("", "json", "yaml"):
        raise ApiError(400, f"?format must be json or yaml, got {fmt!r}", path="format")
    if fmt == "json" or (not fmt and "application/json" in request.headers.get("Accept", "")):
        return json_response(data)
    text = configtext.dump_yaml(data)
    return web.Response(text=text, content_type="text/yaml", charset="utf-8")


async def put_config(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    raw = await request.read()
    ctype = request.content_type or ""
    if not raw.strip():
        raise ApiError(400, "send the whole config as the body (YAML, or JSON with "
                            "Content-Type: application/json); GET /config shows the current one")
    # YAML is the default (JSON is YAML too, near enough). Both go through the
    # bounded reader (proxy/configtext.py): a body that is not UTF-8, too deep,
    # an alias bomb or a huge number is refused (400) with what is wrong.
    # Read and validated in a worker thread: a large config takes a fraction of
    # a second of CPU, which must not be a pause for the traffic on this loop.
    try:
        data = await asyncio.to_thread(load_data, raw, "json" in ctype, "the body")
    except ConfigError as exc:
        kind = "JSON" if "json" in ctype else "YAML"
        raise ApiError(400, f"body is not a config in bounded UTF-8 {kind}: "
                            f"{exc.errors[0][1]}",
                       errors=[{"path": p, "message": m} for p, m in exc.errors]) from None
    config = await asyncio.to_thread(parse_config, data)
    old_listen = ctx.runtime.config.admin.listen
    ctx.runtime.apply(config, verb="put_config", target="config")
    body = full_state(ctx)
    new_listen = ctx.runtime.config.admin.listen
    if new_listen != old_listen:
        body["warnings"] = [
            f"admin.listen changed to {new_listen[0]}:{new_listen[1]}; the admin API keeps "
            f"listening on {old_listen[0]}:{old_listen[1]} until the proxy restarts"]
    return json_response(body)


async def get_metrics(request: web.Request) -> web.Response:
    metrics = ctx_of(request).part("metrics", "GET /metrics")
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def get_request(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    request_id = request.match_info["id"]
    event = ctx.bus.request(request_id)
    if event is None:
        keep = ctx.runtime.config.admin.request_history
        raise ApiError(404, f"no request with id {request_id!r}: it never reached the proxy "
                            f"or was evicted (the newest {keep} are kept; raise "
                            "admin.request_history to keep more)", path="id")
    return json_response(event.to_dict())


async def list_connections(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    live = ctx.part("live_connections", "GET /connections")
    items = live()
    listener = request.query.get("listener")
    if listener:
        items = [c for c in items if c["listener"] == listener]
    return json_response({"count": len(items), "connections": items})


async def list_requests(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    keep = ctx.runtime.config.admin.request_history
    limit = int_query(request, "limit", 100, 1, keep)
    events = ctx.bus.recent_requests(limit)
    return json_response({"count": len(events), "requests": [e.to_dict() for e in events]})


# ---------------------------------------------------------------- event stream

def event_types() -> set[str]:
    """Every event type a stream can be filtered on."""
    found, todo = set(), [Event]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.add(sub.type)
            todo.append(sub)
    return found


def parse_types(request: web.Request) -> set[str] | None:
    raw = request.query.get("types", "")
    if not raw.strip():
        return None
    types = {t.strip() for t in raw.split(",") if t.strip()}
    known = event_types() | STREAM_TYPES
    unknown = sorted(types - known)
    if unknown:
        raise ApiError(400, f"unknown event type(s) {', '.join(unknown)} in ?types; "
                            f"choose from {', '.join(sorted(known))}", path="types")
    return types


def replay_lines(bus, count: int, types: set[str] | None) -> list[str]:
    """The newest `count` past events (requests and others merged by time)."""
    if count <= 0:
        return []
    past = [*bus.recent_requests(count), *bus.recent_connections(count), *bus.recent(count)]
    if types is not None:
        past = [e for e in past if e.type in types]
    past.sort(key=lambda e: e.ts)
    return [e.to_json() for e in past[-count:]]


def parse_sampling(request: web.Request) -> dict:
    """?requests=all|sample|summary, ?max_per_s=N (sample), ?interval_ms=N (sample, summary)."""
    mode = request.query.get("requests", "").strip() or "all"
    if mode not in REQUEST_MODES:
        raise ApiError(400, f"?requests must be one of {', '.join(REQUEST_MODES)}, got "
                            f"{mode!r}", path="requests")
    for name in ("max_per_s", "interval_ms"):
        if name in request.query and mode == "all":
            raise ApiError(400, f"?{name} only applies with ?requests=sample or "
                                f"?requests=summary", path=name)
    if "max_per_s" in request.query and mode != "sample":
        raise ApiError(400, "?max_per_s only applies with ?requests=sample "
                            "(summary sends no request events)", path="max_per_s")
    max_per_s = int_query(request, "max_per_s", SAMPLE_MAX_PER_S, 1, 100_000)
    interval_ms = int_query(request, "interval_ms", STATS_INTERVAL_MS, 50, 60_000)
    return {"requests": mode, "max_per_s": max_per_s, "interval": interval_ms / 1000.0}


async def stream_events(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    types = parse_types(request)
    sampling = parse_sampling(request)
    replay = int_query(request, "replay", 0, 0, REPLAY_MAX)
    sse = "text/event-stream" in request.headers.get("Accept", "")
    # Subscribe before reading the past, with no await between: nothing is
    # lost or doubled at the seam.
    sub = ctx.bus.subscribe(types, **sampling)
    past = replay_lines(ctx.bus, replay, types)
    if sub.stats is not None and (types is None or "request_stats" in types):
        # The opening request_stats line (no counts yet) ends the replay: events
        # before it are history, which no request_stats line counts.
        past.append(sub.stats_line())
    task = asyncio.current_task()
    ctx.streams.add(task)
    try:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })
        await response.prepare(request)
        frame = (lambda line: f"data: {line}\n\n") if sse else (lambda line: line + "\n")
        if past:
            await response.write("".join(map(frame, past)).encode())
        while True:
            batch = await sub.next_batch(STREAM_IDLE_CHECK)
            if batch is None:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                if sse:
                    await response.write(b": keepalive\n\n")
                continue
            await response.write("".join(map(frame, batch)).encode())
            if sub.stats is not None:
                # A sampled stream (the site's bridge) reads counts and a few
                # hundred events a second: lines gathered for a moment go out in
                # one write, not one wake-up and one write per event.
                await asyncio.sleep(SAMPLED_COALESCE)
    except ConnectionResetError:
        pass  # the client went away mid-write: the stream is over
    # CancelledError (the client left, or the admin is stopping) propagates.
    finally:
        sub.close()
        ctx.streams.discard(task)
    return response


# ---------------------------------------------------------------- control verbs

async def change(ctx: AdminContext, verb: str, *args) -> None:
    """Plan a Runtime verb, validate the whole resulting config in a worker thread
    (a large config takes real CPU: not a pause for traffic), apply it on the loop.

    If another change landed while this one was validated, it is planned and
    validated again on top of that one (on the loop), so no change is lost.
    """
    runtime = ctx.runtime
    generation = runtime.generation
    data, (event, target, detail) = runtime.plan(verb, *args)
    config = await asyncio.to_thread(parse_config, data)
    if runtime.generation != generation:
        data, (event, target, detail) = runtime.plan(verb, *args)
        config = parse_config(data)
    runtime.apply(config, verb=event, target=target, detail=detail)


async def add_backend(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    pool = request.match_info["pool"]
    require_pool(ctx, pool)
    body = await read_json_object(
        request, '{"name": "b5", "address": "127.0.0.1:9005", "weight": 1}')
    await change(ctx, "add_backend", pool, body)
    return json_response(full_state(ctx), status=201)


async def remove_backend(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    pool, name = request.match_info["pool"], request.match_info["name"]
    require_backend(ctx, pool, name)
    if truthy(request.query.get("drain")):
        drains = ctx.part("drains", "DELETE ...?drain=1 (drain, then remove)")
        # The drain manager removes it when the drain completes (unless it is
        # activated again first, which ends the drain).
        result = drains.start(pool, name, remove=True)
        body = full_state(ctx)
        body["drain"] = result
        return json_response(body, status=202)
    await change(ctx, "remove_backend", pool, name)
    return json_response(full_state(ctx))


async def set_weight(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    pool, name = request.match_info["pool"], request.match_info["name"]
    require_backend(ctx, pool, name)
    body = await read_json_object(request, '{"weight": 3}')
    if "weight" not in body:
        raise ApiError(400, 'the body needs "weight", e.g. {"weight": 3}', path="weight")
    await change(ctx, "set_weight", pool, name, body["weight"])
    return json_response(full_state(ctx))


async def drain_backend(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    pool, name = request.match_info["pool"], request.match_info["name"]
    require_backend(ctx, pool, name)
    drains = ctx.part("drains", "draining")
    result = drains.start(pool, name)
    body = full_state(ctx)
    body["drain"] = result
    return json_response(body, status=202)


def backend_state_verb(state: str):
    async def handler(request: web.Request) -> web.Response:
        ctx = ctx_of(request)
        pool, name = request.match_info["pool"], request.match_info["name"]
        require_backend(ctx, pool, name)
        await change(ctx, "set_backend_state", pool, name, state)
        return json_response(full_state(ctx))
    handler.__name__ = f"set_{state}"
    return handler


async def set_balancer(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    pool = request.match_info["pool"]
    require_pool(ctx, pool)
    body = await read_json_object(request, '{"algorithm": "least_connections"}')
    if "algorithm" not in body:
        raise ApiError(400, 'the body needs "algorithm" (plus any of its knobs), e.g. '
                            '{"algorithm": "maglev", "table_size": 251}', path="algorithm")
    await change(ctx, "set_balancer", pool, body)
    return json_response(full_state(ctx))


async def put_load(request: web.Request) -> web.Response:
    """A load report from outside (a bulletin board of every balancer's load): kept on the
    backends for balancer.load: reported; live state, not config."""
    ctx = ctx_of(request)
    pool = request.match_info["pool"]
    require_pool(ctx, pool)
    body = await read_json_object(request, '{"loads": {"b1": 3, "b2": 0}}')
    loads = body.get("loads")
    if not isinstance(loads, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1_000_000
            for v in loads.values()):
        raise ApiError(400, 'the body needs "loads": backend name -> requests in flight '
                            '(0 or more; an average may be fractional), e.g. '
                            '{"loads": {"b1": 3, "b2": 0.5}}', path="loads")
    runtime_pool = ctx.runtime.pools[pool]
    unknown = runtime_pool.report_load(loads, ctx.runtime.clock())
    body = {"pool": pool, "loads": loads}
    if unknown:
        body["unknown"] = unknown
    return json_response(body)


async def patch_pool(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    pool = request.match_info["pool"]
    require_pool(ctx, pool)
    body = await read_json_object(request, '{"panic_threshold": 0.5, "retries": 2}')
    if not body:
        raise ApiError(400, "the body names no setting; give one or more of health, outlier, "
                            "slow_start, deregistration_delay, timeouts, panic_threshold, "
                            "retries, retry_budget, sticky, max_connections_per_backend, "
                            "queue, backup_threshold, cross_zone")
    await change(ctx, "set_pool_settings", pool, body)
    return json_response(full_state(ctx))


# ---------------------------------------------------------------- the route table

ROUTES: list[tuple[str, str, object, str]] = [
    ("GET", "/", index, "this list"),
    ("GET", "/healthz", healthz, "liveness: 200 ok"),
    ("GET", "/state", get_state, "runtime state, config, event counters, drains"),
    ("GET", "/config", get_config, "current config as YAML (?format=json for JSON)"),
    ("PUT", "/config", put_config, "replace the whole config (YAML or JSON body); refused whole"),
    ("GET", "/events", stream_events,
     "live events as NDJSON (SSE with Accept: text/event-stream); ?types=a,b ?replay=N "
     "?requests=all|sample|summary ?max_per_s=200 ?interval_ms=250"),
    ("GET", "/requests", list_requests, "recent request events, oldest first (?limit=100)"),
    ("GET", "/connections", list_connections,
     "live L4 connections and WebSocket tunnels: age, client, backend, bytes (?listener=)"),
    ("GET", "/requests/{id}", get_request, "one request event by X-Request-Id"),
    ("GET", "/metrics", get_metrics, "Prometheus text exposition"),
    ("POST", "/pools/{pool}/backends", add_backend,
     'add a backend: {"name", "address", "weight"?, "state"?}'),
    ("DELETE", "/pools/{pool}/backends/{name}", remove_backend,
     "remove a backend now, or ?drain=1 to drain it first"),
    ("PUT", "/pools/{pool}/backends/{name}/weight", set_weight, 'set weight: {"weight": N}'),
    ("POST", "/pools/{pool}/backends/{name}/drain", drain_backend, "start draining a backend"),
    ("POST", "/pools/{pool}/backends/{name}/maintenance", backend_state_verb("maintenance"),
     "take a backend out of rotation (intent maintenance)"),
    ("POST", "/pools/{pool}/backends/{name}/activate", backend_state_verb("active"),
     "put a backend back in rotation (intent active)"),
    ("PUT", "/pools/{pool}/balancer", set_balancer,
     'change the algorithm: {"algorithm": "...", ...knobs}'),
    ("PUT", "/pools/{pool}/load", put_load,
     'a load report for balancer.load: reported: {"loads": {"b1": 3, ...}}'),
    ("PATCH", "/pools/{pool}", patch_pool,
     "replace pool settings: health, outlier, slow_start, timeouts, panic_threshold, ..."),
]


# ---------------------------------------------------------------- middleware

def bearer_ok(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@web.middleware
async def auth_middleware(request: web.Request, handler):
    # Read at every request: a PUT /config that changes the token applies at once.
    token = ctx_of(request).runtime.config.admin.token
    if token and not bearer_ok(request, token):
        response = error_response(
            401, "this admin API needs a token: send the header "
                 "'Authorization: Bearer <admin.token>' (the token is in the proxy's config)")
        response.headers["WWW-Authenticate"] = 'Bearer realm="lblab-admin"'
        return response
    return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.as_json(), status=exc.status)
    except ConfigError as exc:
        return json_response(exc.as_json(), status=422)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(405, f"{request.method} is not allowed on {request.path}; "
                                   f"use {allowed} (GET / lists every endpoint)")
    except web.HTTPNotFound:
        return error_response(404, f"no endpoint {request.method} {request.path}; "
                                   "GET / lists every endpoint")
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, f"body too large (limit {MAX_BODY} bytes)")
    except web.HTTPException:
        raise
    except Exception as exc:  # a bug, not the client's fault: say so and log it
        log.exception("admin API %s %s failed", request.method, request.path)
        return error_response(500, f"internal error in the admin API: "
                                   f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- start / stop

def make_app(server) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=MAX_BODY)
    app[CTX] = AdminContext(server)
    for method, path, handler, _summary in ROUTES:
        app.router.add_route(method, path, handler)
    app.on_shutdown.append(_close_streams)
    return app


async def _close_streams(app: web.Application) -> None:
    """Open /events streams never end by themselves; end them so shutdown is quick."""
    for task in list(app[CTX].streams):
        task.cancel()


class AdminHandle:
    def __init__(self, runner: web.AppRunner, app: web.Application, host: str, port: int):
        self.runner = runner
        self.app = app
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_admin(server) -> AdminHandle:
    """Serve the admin API on runtime.config.admin.listen in the running loop."""
    host, port = server.runtime.config.admin.listen
    app = make_app(server)
    # handler_cancellation: a client that leaves /events cancels its handler at
    # once, so its subscription is closed without waiting for the next event.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"admin API cannot listen on {host}:{port}: {exc.strerror}; "
                                 "change admin.listen or stop what uses that port") from exc
    bound_port = runner.addresses[0][1]
    log.info("admin API on http://%s:%s", host, bound_port)
    return AdminHandle(runner, app, host, bound_port)
