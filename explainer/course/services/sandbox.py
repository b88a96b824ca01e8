"""The learner's sandbox, as the course uses it: "see it live" and predict-then-observe.

One sandbox per learner, *the same one* their graded labs and workshops use: its id
comes from the learner key (labs.services.sandboxes.sandbox_id_for) and it lives under
the labs' state directory and cap, so the labs' idle reaper stops it and the dashboard
shows it at /lab/<id>/. The course starts it when the learner first asks for it, with
four toy backends b1..b4 (what every lesson preset and exercise is written for).

Applying a preset is one `PUT /config` through the admin API, with the sandbox's own
addresses put in (the running listener's bind and admin address, each backend's port by
name). Before that every toy backend's faults are cleared, so a fault left by a lab or an
exercise does not haunt the next lesson. A sandbox whose processes died, or that a lab
left with other backends (or an app server in place of a toy), is started again.
"""
from __future__ import annotations

import copy
import http.client
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from labs.problems import Problem

from labs.sandbox import addresses
from labs.sandbox.admin_client import AdminClient, AdminError, BackendControl
from labs.services import sandboxes as learner_sandboxes

BACKENDS = ["b1", "b2", "b3", "b4"]
FAST_HEALTH = {"type": "http", "path": "/health", "interval": "500ms", "timeout": "300ms",
               "unhealthy_threshold": 3, "healthy_threshold": 1}


class SandboxUnavailable(Problem):
    """The learner's sandbox cannot be used now; the message says why and what to do."""

    status = 503

    def __init__(self, message: str, status: int | None = None,
                 errors: list[dict] | None = None):
        super().__init__(message, errors or None, status)


def sandbox_id_for(learner_key: str) -> str:
    return learner_sandboxes.sandbox_id_for(learner_key)


def service():
    return learner_sandboxes.service()


def _timeout() -> float:
    return float(getattr(settings, "LBLAB_ADMIN_TIMEOUT", 3.0))


# One thing at a time per sandbox in this process: a double click must not run two
# exercises (or a preset and an exercise) into each other.
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def lock_for(sandbox_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(sandbox_id, threading.Lock())


def base_config() -> dict:
    from labs.sandbox.topology import default_config

    config = default_config(BACKENDS)
    config["pools"]["web"]["health"] = dict(FAST_HEALTH)
    config["pools"]["web"]["deregistration_delay"] = "1s"
    return config


def _fits(sb) -> bool:
    """Every part runs and it has exactly the toy backends the course writes for."""
    return (sb.status == "running" and sorted(sb.backends) == BACKENDS
            and all(sb.alive(part) for part in ["proxy", *BACKENDS]))


def find(learner_key: str):
    """The learner's sandbox record if it exists (running or not), else None."""
    from labs.sandbox import SandboxNotFound

    try:
        return service().get(sandbox_id_for(learner_key))
    except SandboxNotFound:
        return None


def lab_run_active(learner_key: str) -> bool:
    """A graded lab run of this learner started in the last minutes and is not finished.

    Such a run owns the sandbox (it restarts it with the lab's topology); the course must
    not change it under the run. Older rows are ignored: a run nobody polled to the end
    may still say "running" in the database.
    """
    try:
        from labs.models import LabRun
    except ImportError:
        return False
    import datetime

    from django.utils import timezone

    since = timezone.now() - datetime.timedelta(minutes=5)
    return LabRun.objects.filter(learner=learner_key, created_at__gte=since,
                                 state__in=[LabRun.QUEUED, LabRun.RUNNING]).exists()


def ensure(learner_key: str):
    """The learner's running sandbox, started (or started again) when needed."""
    if lab_run_active(learner_key):
        raise SandboxUnavailable("a graded lab run is using your sandbox right now; come back "
                                 "when it has finished (its page shows the progress)", status=409)
    sb, _ = learner_sandboxes.ensure(learner_key, backends=list(BACKENDS), config=base_config(),
                                     reuse=lambda s: _fits(s) and _toys_answer(s))
    return sb


def _toys_answer(sb) -> bool:
    """Each backend is a toy backend (a lab may have put an app server in its place)."""
    def ok(url: str) -> bool:
        try:
            return isinstance(BackendControl(url, timeout=1.0).stats(), dict)
        except AdminError:
            return False

    with ThreadPoolExecutor(max_workers=len(sb.backends)) as pool:
        return all(pool.map(ok, [sb.backends[n] for n in BACKENDS]))


def admin(sb) -> AdminClient:
    return AdminClient(sb.admin_url, timeout=_timeout())


def clear_faults(sb) -> None:
    def clear(url: str) -> None:
        BackendControl(url, timeout=_timeout()).clear_faults()

    try:
        with ThreadPoolExecutor(max_workers=len(BACKENDS)) as pool:
            list(pool.map(clear, [sb.backends[n] for n in BACKENDS]))
    except AdminError as exc:
        raise SandboxUnavailable(f"could not clear the toy backends' faults: {exc.message}") from None


def set_faults(sb, faults: dict[str, dict]) -> None:
    def put(item) -> None:
        name, knobs = item
        BackendControl(sb.backends[name], timeout=_timeout()).set_faults(knobs)

    try:
        with ThreadPoolExecutor(max_workers=max(1, len(faults))) as pool:
            list(pool.map(put, faults.items()))
    except AdminError as exc:
        raise SandboxUnavailable(f"a toy backend refused a fault: {exc.message}",
                                 status=422, errors=exc.errors) from None


def place(config: dict, sb, running: dict) -> dict:
    """`config` with this sandbox's addresses: the running listener and admin, backend ports."""
    out = copy.deepcopy(config)
    run_listeners = running.get("listeners") or {}
    if not run_listeners:
        raise SandboxUnavailable("the running proxy reports no listener; restart the sandbox")
    # The sandbox's main listener: the one on its proxy port (a lab may have added others).
    port = f":{sb.ports.get('proxy')}"
    run_name, run_listener = next(
        ((n, l) for n, l in run_listeners.items() if str(l.get("bind", "")).endswith(port)),
        next(iter(run_listeners.items())))
    (name, listener), = out["listeners"].items()
    listener = dict(listener)
    listener["bind"] = run_listener["bind"]
    # Keep the running listener's name: renaming it would make the proxy bind a second
    # listener on the same port before closing the first.
    out["listeners"] = {run_name: listener}
    out["admin"] = {**(out.get("admin") or {}),
                    "listen": (running.get("admin") or {}).get("listen")
                    or f"{sb.inner_host}:{sb.ports['admin']}"}
    for pool in (out.get("pools") or {}).values():
        for backend in (pool or {}).get("backends") or []:
            url = sb.backends.get(backend.get("name"))
            if url:
                backend["address"] = url.split("://", 1)[1].rstrip("/")
    return out


def apply(sb, config: dict, fresh_balancers: bool = False) -> dict:
    """PUT the config (placed for this sandbox); returns the new state.

    `fresh_balancers`: apply once with every pool's balancer and stickiness swapped out
    first, so the real apply builds them new (a round-robin index, smooth-WRR weights and
    sticky tables start from zero; the proxy keeps them when settings are unchanged).
    """
    client = admin(sb)
    try:
        running = client.config()
        placed = place(config, sb, running)
        errors = addresses.check_config(placed, sb)
        if errors:  # a preset naming a backend the sandbox does not have
            raise SandboxUnavailable("this config points outside your sandbox: "
                                     + errors[0]["message"], status=422, errors=errors)
        if fresh_balancers:
            scratch = copy.deepcopy(placed)
            for pool in (scratch.get("pools") or {}).values():
                pool["balancer"] = {"algorithm": "random"}
                pool.pop("sticky", None)
            client.put_config(scratch)
        return client.put_config(placed)
    except AdminError as exc:
        raise SandboxUnavailable(f"the proxy refused the config: {exc.message}", status=422,
                                 errors=exc.errors) from None


def wait_ready(sb, timeout: float = 6.0) -> list[str]:
    """Wait until every active backend is eligible; returns those still not (empty: ready)."""
    client = admin(sb)
    deadline = time.monotonic() + timeout
    waiting: list[str] = []
    while True:
        try:
            state = client.state()
        except AdminError as exc:
            raise SandboxUnavailable(f"the proxy does not answer: {exc.message}") from None
        waiting = [f"{b['name']} ({b.get('health')})"
                   for pool in (state.get("pools") or {}).values()
                   for b in pool.get("backends") or []
                   if b.get("intent") == "active" and not b.get("eligible")]
        if not waiting or time.monotonic() > deadline:
            return waiting
        time.sleep(0.05)


# ---------------------------------------------------------------- "see it live"

def apply_preset(learner_key: str, config: dict) -> tuple[object, dict]:
    """Start (or reuse) the learner's sandbox, clear faults, apply the lesson's preset."""
    sb = ensure(learner_key)
    lock = lock_for(sb.id)
    if not lock.acquire(timeout=10):
        raise SandboxUnavailable("your sandbox is busy with an exercise; try again when it is "
                                 "done", status=409)
    try:
        clear_faults(sb)
        state = apply(sb, config, fresh_balancers=True)
    finally:
        lock.release()
    return sb, state


@dataclass
class Sent:
    """One request sent through the proxy, with what the client saw."""

    index: int
    request_id: str
    client: str | None
    path: str
    status: int = 0
    backend_header: str | None = None
    proxy_error: str | None = None  # X-LBLab-Error
    seconds: float = 0.0
    error: str | None = None
    tag: str | None = None
    headers: dict = field(default_factory=dict)


def send(sb, index: int, path: str = "/", method: str = "GET", client: str | None = None,
         headers: dict | None = None, cookies: dict | None = None, timeout: float = 6.0,
         prefix: str = "course", tag: str | None = None) -> tuple[Sent, dict]:
    """One real request through the sandbox's proxy; returns (what happened, Set-Cookies)."""
    host_port = sb.proxy_url.split("://", 1)[1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    rid = f"{prefix}-{uuid.uuid4().hex[:10]}-{index}"
    sent = Sent(index=index, request_id=rid, client=client, path=path, tag=tag)
    hdrs = {"X-Request-Id": rid, "Connection": "close", **(headers or {})}
    if cookies:
        hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    sent.headers = {k: v for k, v in hdrs.items() if k not in ("Connection",)}
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout,
                                      source_address=(client, 0) if client else None)
    started = time.monotonic()
    new_cookies: dict = {}
    try:
        conn.request(method, path, headers=hdrs)
        resp = conn.getresponse()
        resp.read()
        sent.status = resp.status
        sent.backend_header = resp.getheader("X-Backend")
        sent.proxy_error = resp.getheader("X-LBLab-Error")
        for value in resp.msg.get_all("Set-Cookie") or []:
            pair = value.split(";", 1)[0]
            if "=" in pair:
                k, v = pair.split("=", 1)
                new_cookies[k.strip()] = v.strip()
    except (OSError, http.client.HTTPException) as exc:
        sent.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        sent.seconds = round(time.monotonic() - started, 4)
        conn.close()
    return sent, new_cookies


def events_for(sb, request_ids: list[str], timeout: float = 2.0) -> dict[str, dict]:
    """The proxy's request event for each id (GET /requests/<id>), waiting briefly for late ones."""
    client = admin(sb)
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    pending = list(request_ids)
    while pending:
        for rid in list(pending):
            try:
                found[rid] = client.request(rid)
                pending.remove(rid)
            except AdminError as exc:
                if exc.status != 404:
                    raise SandboxUnavailable(f"could not read request {rid}: {exc.message}") from None
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return found


def send_sample(learner_key: str, traffic) -> dict:
    """The lesson's sample traffic through the learner's proxy (a few requests, in turn)."""
    sb = find(learner_key)
    if sb is None or not _fits(sb):
        raise SandboxUnavailable("your sandbox is not running: press “Set up my sandbox” first",
                                 status=409)
    service().touch(sb.id)
    jars: dict[str | None, dict] = {}
    results = []
    for i in range(traffic.count):
        client = traffic.clients[i % len(traffic.clients)] if traffic.clients else None
        headers = traffic.headers[i % len(traffic.headers)] if traffic.headers else None
        jar = jars.setdefault(client, {}) if traffic.cookie_jar else None
        path = traffic.paths[i % len(traffic.paths)]
        sent, cookies = send(sb, i, path, client=client, headers=headers,
                             cookies=jar, timeout=5.0, prefix="sample")
        if jar is not None:
            jar.update(cookies)
        results.append(sent)
    statuses: dict[str, int] = {}
    for r in results:
        key = str(r.status or "no answer")
        statuses[key] = statuses.get(key, 0) + 1
    summary = ", ".join(f"{n}× {s}" for s, n in sorted(statuses.items()))
    return {"ok": True, "sent": len(results), "message": f"Sent {len(results)} requests "
            f"through your proxy: {summary}."}


_touched: dict[str, float] = {}


def _touch(sb, every_s: float = 30.0) -> bool:
    """Watching a sandbox counts as using it: the idle reaper leaves it alone meanwhile.

    False when the sandbox was stopped in the meantime (reaped, or restarted by a lab)."""
    now = time.monotonic()
    if now - _touched.get(sb.id, float("-inf")) >= every_s:
        try:
            service().touch(sb.id)
        except LookupError:
            return False
        _touched[sb.id] = now
    return True


def recent(learner_key: str, limit: int = 12) -> dict:
    """The newest request decisions of the learner's proxy, for the lesson's small live view."""
    sb = find(learner_key)
    if sb is None:
        return {"ok": True, "running": False, "rows": [], "sandbox": None}
    if not _touch(sb):
        return {"ok": True, "running": False, "rows": [], "sandbox": sb.id,
                "detail": "your sandbox was stopped; press “Set up my sandbox” to start it again"}
    from labs import diagrams

    client = admin(sb)
    try:
        events = client.recent_requests(limit)
        state = client.state()
    except AdminError as exc:
        return {"ok": True, "running": False, "rows": [], "sandbox": sb.id,
                "detail": f"your proxy does not answer: {exc.message}"}
    rows = [decision_row(e) for e in reversed(events)]
    return {"ok": True, "running": True, "rows": rows, "sandbox": sb.id,
            "diagram": diagrams.topology(state), "generation": state.get("generation")}


def why_text(event: dict) -> str:
    """The algorithm's inputs and the sticky outcome in one short line."""
    parts = []
    sticky = event.get("sticky")
    if sticky:
        if sticky.get("hit"):
            parts.append(f"sticky hit → {sticky.get('target')}")
        else:
            parts.append(f"sticky miss ({sticky.get('reason') or 'new client'})")
    inputs = event.get("inputs") or {}
    for key, value in list(inputs.items())[:4]:
        if isinstance(value, float):
            value = round(value, 2)
        if isinstance(value, (dict, list)):
            text = str(value)
            value = text if len(text) <= 48 else text[:47] + "…"
        parts.append(f"{key}={value}")
    if event.get("error"):
        parts.append(str(event["error"])[:80])
    return " · ".join(parts)


def decision_row(event: dict) -> dict:
    return {
        "request_id": event.get("request_id"),
        "ts": event.get("ts"),
        "client": (event.get("client") or "").rsplit(":", 1)[0],
        "method": event.get("method"),
        "path": event.get("path"),
        "algorithm": event.get("algorithm"),
        "backend": event.get("backend"),
        "status": event.get("status"),
        "proxy_error": bool(event.get("proxy_error")),
        "latency_ms": round(float(event.get("latency_ms") or 0), 2),
        "why": why_text(event),
        "termination": event.get("termination"),
    }
