"""What the dashboard's controls do: one function per verb, no HTTP request objects.

Each function takes a sandbox id and already-validated values (the forms in
explainer/forms.py check shapes), calls the proxy's admin API, a toy
backend's control API, SandboxService or TrafficService, and returns a small
dict `{"ok": True, "message": "...", ...}` the page shows as is.

Changes are validated where the rules live: the proxy refuses a bad weight
or health setting itself and its [{"path", "message"}] list comes back in a
`ControlError` unchanged, so the page shows the proxy's own words.
"""
from __future__ import annotations

from django.conf import settings

from labs.problems import Problem
from labs.sandbox import addresses

from labs.sandbox.admin_client import (
    AdminClient,
    AdminError,
    BackendControl,
    Refused,
    Unreachable,
)
from explainer.services import listener_modes
from explainer.services.sandboxes import (
    SandboxError,
    SandboxRef,
    backend_url,
    get_sandbox,
    service,
)

TRAFFIC_PROFILES = {
    "steady": "steady: a constant stream of ordinary requests",
    "bursty": "bursty: quiet, then a burst, again and again",
    "heavy_user": "heavy user: one client sends most of the traffic",
    "nat": "NAT: many users behind a few client addresses",
    "uploads": "uploads: slow request bodies that hold connections",
}

# Fault name -> (label, what it does); the patch is built by fault_patch().
FAULTS = {
    "kill": ("Kill the process", "the backend exits at once: connections are refused"),
    "slow": ("Slow responses", "every app request waits latency_ms (+ jitter)"),
    "errors": ("Return errors", "a share of app requests get an error status"),
    "hang": ("Hang", "accept requests and never answer"),
    "crash_mid_response": ("Crash mid-response", "send half a response, then close"),
    "reset": ("Reset connections", "answer with a TCP RST"),
    "health_fail": ("Fail health checks", "/health answers 503; app requests still work"),
    "dependency_down": ("Dependency down", "readiness 503 and app requests 503"),
    "warmup": ("Warm-up", "503 'warming up' for warmup_s seconds"),
    "clear": ("Clear all faults", "back to a healthy, fast backend"),
}


class ControlError(Problem):
    """A control that could not be done; `errors` is [{"path", "message"}]."""

    status = 422

    @classmethod
    def wrap(cls, exc: Exception) -> "ControlError":
        if isinstance(exc, ControlError):
            return exc
        if isinstance(exc, Unreachable):
            return cls(exc.message, exc.errors, status=502)
        if isinstance(exc, Refused):
            # Keep the proxy's own status class: 4xx is the user's change, else 502.
            status = exc.status if exc.status and 400 <= exc.status < 500 else 502
            return cls(exc.message, exc.errors, status=status)
        if isinstance(exc, SandboxError):
            return cls(exc.message, [{"path": "sandbox", "message": exc.message}],
                       status=exc.status)
        if isinstance(exc, AdminError):
            return cls(exc.message, exc.errors, status=502)
        if isinstance(exc, Problem):
            return cls(exc.message, exc.errors, status=exc.status)
        raise exc


def _timeout() -> float:
    return float(getattr(settings, "LBLAB_ADMIN_TIMEOUT", 3.0))


def _admin(sandbox: SandboxRef) -> AdminClient:
    return AdminClient(sandbox.admin_url, timeout=_timeout())


def _run(fn):
    """Call fn(), turning the clients' and sandbox errors into ControlError."""
    try:
        return fn()
    except (AdminError, SandboxError) as exc:
        raise ControlError.wrap(exc) from None


def _done(message: str, state: dict | None = None, **extra) -> dict:
    out = {"ok": True, "message": message}
    if state is not None and isinstance(state, dict):
        out["state"] = {k: v for k, v in state.items() if k != "config"}
    out.update(extra)
    return out


# ---------------------------------------------------------------- balancer and backends

def set_algorithm(sandbox_id: str, pool: str, algorithm: str, options: dict | None = None) -> dict:
    balancer = {"algorithm": algorithm, **(options or {})}
    state = _run(lambda: _admin(get_sandbox(sandbox_id)).set_balancer(pool, balancer))
    return _done(f"Pool {pool} now balances with {algorithm}.", state)


def set_weight(sandbox_id: str, pool: str, backend: str, weight: int) -> dict:
    state = _run(lambda: _admin(get_sandbox(sandbox_id)).set_weight(pool, backend, weight))
    return _done(f"{backend} now has weight {weight}.", state)


def confine_backend(sandbox: SandboxRef, address: str) -> None:
    """The address rule (labs/sandbox/addresses.py): a backend must be the sandbox's own."""
    if sandbox.managed and sandbox.handle is not None:
        errors = addresses.check_backend(address, sandbox.handle)
    else:
        state = _admin(sandbox).state()
        known = [b.get("address", "") for p in (state.get("pools") or {}).values()
                 for b in p.get("backends") or []]
        errors = addresses.check_backend_among(address, known)
    if errors:
        raise ControlError(errors[0]["message"], errors, status=422)


def add_backend(sandbox_id: str, pool: str, name: str, address: str, weight: int = 1) -> dict:
    def go():
        sandbox = get_sandbox(sandbox_id)
        confine_backend(sandbox, address)
        return _admin(sandbox).add_backend(pool, name, address, weight)

    state = _run(go)
    return _done(f"Added {name} ({address}) to pool {pool}.", state)


def remove_backend(sandbox_id: str, pool: str, name: str, drain: bool = False) -> dict:
    state = _run(lambda: _admin(get_sandbox(sandbox_id)).remove_backend(pool, name, drain))
    if drain:
        return _done(f"Draining {name}: it is removed when its in-flight requests finish "
                     "(or the deregistration delay ends).", state)
    return _done(f"Removed {name} from pool {pool}.", state)


INTENT_MESSAGES = {
    "drain": "{name} is draining: no new requests, in-flight ones may finish.",
    "maintenance": "{name} is in maintenance: out of rotation until activated.",
    "activate": "{name} is active again: back in rotation when healthy.",
}


def backend_intent(sandbox_id: str, pool: str, name: str, verb: str) -> dict:
    state = _run(lambda: _admin(get_sandbox(sandbox_id)).set_intent(pool, name, verb))
    return _done(INTENT_MESSAGES[verb].format(name=name), state)


def set_health(sandbox_id: str, pool: str, health: dict | None) -> dict:
    """Change the given health-check settings; the ones not given keep their values."""
    def go():
        admin = _admin(get_sandbox(sandbox_id))
        merged = health
        if health is not None:
            current = ((admin.state().get("pools") or {}).get(pool) or {}).get("health_check")
            merged = {**(current or {}), **health}
        return admin.patch_pool(pool, {"health": merged})

    state = _run(go)
    if health is None:
        return _done(f"Active health checks are off for pool {pool}: only passive signals "
                     "(if configured) will notice a dead backend.", state)
    return _done(f"Pool {pool} now probes every {health.get('interval')}; "
                 f"{health.get('unhealthy_threshold')} failures mark a backend unhealthy, "
                 f"{health.get('healthy_threshold')} successes bring it back.", state)


# ---------------------------------------------------------------- listener modes

def set_listener_mode(sandbox_id: str, listener: str, protocol: str, tls: str) -> dict:
    """Flip a listener between L4 and L7 and between TLS modes, through PUT /config.

    The new config is built from the running one (explainer/services/listener_modes.py);
    a refusal keeps the proxy's own [{"path", "message"}], which say what the new mode
    cannot do, under a headline naming the mode asked for.
    """
    label = listener_modes.mode_label(protocol, tls)

    def go():
        admin = _admin(get_sandbox(sandbox_id))
        config = admin.config()
        view = ((admin.state() or {}).get("tls") or {}).get(listener)
        try:
            change = listener_modes.build(config, listener, protocol, tls, view)
        except listener_modes.ModeError as exc:
            raise ControlError(f"Listener {listener} cannot become {label} (nothing changed):",
                               exc.errors, status=exc.status) from None
        if change.unchanged:
            return _done(change.message, notes=[], listener=listener)
        try:
            state = admin.put_config(change.config)
        except Refused as exc:
            if exc.status != 422:
                raise
            raise ControlError(f"The proxy refused listener {listener} as {label} "
                               "(the running config is unchanged):", exc.errors,
                               status=422) from None
        return _done(change.message, state, notes=change.notes, listener=listener,
                     mode={"protocol": protocol, "tls": tls})

    return _run(go)


# ---------------------------------------------------------------- toy backend faults

def fault_patch(fault: str, values: dict) -> dict:
    """The /_control/faults patch for one fault of the menu."""
    if fault == "slow":
        return {"latency_ms": values.get("latency_ms") or 500,
                "jitter_ms": values.get("jitter_ms") or 0}
    if fault == "errors":
        return {"error_rate": values.get("error_rate") if values.get("error_rate") is not None
                else 0.5, "error_status": values.get("error_status") or 500}
    if fault == "hang":
        return {"hang": True}
    if fault == "crash_mid_response":
        rate = values.get("rate")
        return {"crash_mid_response": True if rate in (None, 1, 1.0) else rate}
    if fault == "reset":
        rate = values.get("rate")
        return {"reset": True if rate in (None, 1, 1.0) else rate}
    if fault == "health_fail":
        return {"health_fail": True}
    if fault == "dependency_down":
        return {"dependency_down": True}
    if fault == "warmup":
        return {"warmup_s": values.get("warmup_s") or 10}
    raise ValueError(f"no patch for fault {fault!r}")


def _backend_control(sandbox: SandboxRef, name: str) -> BackendControl:
    state = None
    if name not in sandbox.backends:
        state = _admin(sandbox).state()
    return BackendControl(backend_url(sandbox, name, state), timeout=_timeout())


def _log_fault(sandbox_id: str, backend: str, answer: dict | None) -> None:
    """Note the backend's knobs after a change (None: killed) in the sandbox's fault log, so
    a replay of a window of this dashboard sets them at the same second
    (labs/framework/replay_window.py)."""
    from labs.framework import replay_window
    from labs.services import sandboxes as learner_sandboxes

    try:
        replay_window.log_fault(learner_sandboxes.state_dir(), sandbox_id, backend,
                                (answer or {}).get("faults") or {}, killed=answer is None)
    except OSError as exc:  # the fault itself was set; a replay will say it lacks the log
        import logging

        logging.getLogger(__name__).warning("fault log of %s not written: %s", sandbox_id, exc)


def inject_fault(sandbox_id: str, backend: str, fault: str, values: dict | None = None) -> dict:
    values = values or {}

    def go():
        control = _backend_control(get_sandbox(sandbox_id), backend)
        if fault == "kill":
            control.crash()
            _log_fault(sandbox_id, backend, None)
            return _done(f"Killed {backend}. Watch the health checker notice it; "
                         "restart it when you are done.", fault=fault)
        if fault == "clear":
            faults = control.clear_faults()
            _log_fault(sandbox_id, backend, faults)
            return _done(f"Cleared every fault on {backend}.", faults=faults, fault=fault)
        patch = fault_patch(fault, values)
        faults = control.set_faults(patch)
        _log_fault(sandbox_id, backend, faults)
        shown = ", ".join(f"{k}={v}" for k, v in patch.items())
        return _done(f"{backend}: {FAULTS[fault][0].lower()} ({shown}).", faults=faults,
                     fault=fault)

    return _run(go)


def _service_errors() -> tuple[type[BaseException], ...]:
    """The labs services' own error classes (messages written for the user), if present."""
    found: list[type[BaseException]] = [LookupError, ValueError, OSError]
    try:
        from labs.sandbox import SandboxError as LabsSandboxError
        found.append(LabsSandboxError)
    except ImportError:
        pass
    return tuple(found)


def _because(prefix: str, exc: Exception, status: int) -> ControlError:
    """A service's error as a ControlError; a Problem (TrafficError...) keeps its fields and
    its own status, so "users must be 1-5000" stays a 400 on ``users``."""
    if isinstance(exc, ControlError):
        return exc
    if isinstance(exc, Problem):
        return ControlError(f"{prefix}: {exc.message}", exc.errors, status=exc.status)
    return ControlError(f"{prefix}: {exc}", status=status)


def restart_backend(sandbox_id: str, backend: str) -> dict:
    """Start a dead (or stuck) part again: a toy backend by name, or ``"proxy"``."""
    def go():
        sandbox = get_sandbox(sandbox_id)
        if not sandbox.managed:
            if backend == "proxy":
                raise ControlError(f"sandbox {sandbox_id!r} is not supervised by the sandbox "
                                   "service, so the site cannot start its proxy; start it "
                                   "yourself: python -m proxy --config FILE", status=409)
            address = backend_url(sandbox, backend, _admin(sandbox).state())
            port = address.rsplit(":", 1)[-1]
            raise ControlError(
                f"sandbox {sandbox_id!r} is not supervised by the sandbox service, so the site "
                f"cannot start processes for it; start it yourself: "
                f"python -m labs.backend --name {backend} --port {port}", status=409)
        from labs.services import sandboxes as learner_sandboxes

        try:
            learner_sandboxes.restart(sandbox_id, backend)
        except Problem as exc:
            raise ControlError(f"could not restart {backend}: {exc.message}", status=409) from None
        except _service_errors() as exc:
            raise ControlError(f"could not restart {backend}: {exc}", status=409) from None
        if backend == "proxy":
            return _done("Restarted the proxy from the config it was started with (changes "
                         "made since then are gone); its health checks start again.")
        return _done(f"Restarted {backend}. The health checker marks it healthy after enough "
                     "good probes.")

    return _run(go)


# ---------------------------------------------------------------- traffic

def _traffic():
    try:
        from labs.traffic import TrafficService
    except ImportError as exc:
        raise ControlError(f"the traffic service (labs.traffic) cannot be loaded ({exc}); "
                           "send requests yourself, e.g. with curl against the proxy",
                           status=503) from None
    return TrafficService()


def _traffic_target(sandbox: SandboxRef) -> object:
    """What TrafficService.start needs: the Sandbox record, or {id, proxy_url}."""
    if sandbox.handle is not None:
        return sandbox.handle
    url = sandbox.proxy_url
    if not url:
        state = _admin(sandbox).state()
        tls = state.get("tls") or {}
        plain = [(l, (tls.get(n) or {}).get("mode", "none") == "none")
                 for n, l in (state.get("listeners") or {}).items()]
        bind = next((l["bind"] for l, clear in plain if l.get("protocol") == "http" and clear),
                    None)
        if bind is None:  # HTTP load through a plain L4 listener is relayed as bytes: fine too
            bind = next((l["bind"] for l, clear in plain if clear), None)
        if bind is None:
            raise ControlError("this proxy has no plain (non-TLS) listener to send traffic to",
                               status=409)
        url = f"http://{bind}"
    return {"id": sandbox.id, "proxy_url": url}


def _latest_run(svc, sandbox_id: str, run_id: str | None) -> str | None:
    if run_id:
        return run_id
    runs = svc.runs_for(sandbox_id)
    running = [r for r in runs if r.get("state") == "running"]
    chosen = (running or runs or [None])[-1]
    return chosen["run_id"] if chosen else None


def start_traffic(sandbox_id: str, profile: str, users: int, duration_s: int) -> dict:
    def go():
        target = _traffic_target(get_sandbox(sandbox_id))
        try:
            run = _traffic().start(target, profile, users=users, duration_s=duration_s)
        except (Problem, *_service_errors()) as exc:
            raise _because("could not start traffic", exc, 409) from None
        return _done(f"Started {profile} traffic: {users} users for {duration_s} s.",
                     run={k: run.get(k) for k in ("run_id", "profile", "users", "duration_s",
                                                   "host", "started_at")})

    return _run(go)


def stop_traffic(sandbox_id: str, run_id: str | None = None) -> dict:
    def go():
        get_sandbox(sandbox_id)
        svc = _traffic()
        try:
            if run_id is None:  # Stop means every run of this sandbox
                stopped = svc.stop_all(sandbox_id)
                if not stopped:
                    raise ControlError("no traffic run is going for this sandbox", status=409)
                names = ", ".join(s["run_id"] for s in stopped)
                return _done(f"Stopped traffic run{'s' if len(stopped) > 1 else ''} {names}.",
                             run=_jsonable(stopped[-1]))
            status = svc.stop(run_id)
        except (Problem, *_service_errors()) as exc:
            raise _because("could not stop traffic", exc, 409) from None
        return _done(f"Stopped traffic run {run_id}.", run=_jsonable(status))

    return _run(go)


def traffic_status(sandbox_id: str, run_id: str | None = None) -> dict:
    """The newest run of the sandbox (or `run_id`): state, progress 0..1, stats."""
    def go():
        get_sandbox(sandbox_id)
        svc = _traffic()
        try:
            chosen = _latest_run(svc, sandbox_id, run_id)
            if chosen is None:
                return {"ok": True, "state": "idle", "progress": 0, "stats": None}
            return {"ok": True, **_jsonable(svc.status(chosen))}
        except (Problem, *_service_errors()) as exc:
            raise _because("no traffic status", exc, 404) from None

    return _run(go)


def _jsonable(value):
    """Service results may be dataclasses or objects: make them JSON-friendly."""
    import dataclasses
    import json

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))
