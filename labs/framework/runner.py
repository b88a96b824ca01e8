"""Run a lab: sandbox, config, traffic, faults, recording, grading.

Theory of operation
-------------------
``run_lab(lab, document, options)`` does, in order:

1. **Check** the learner's document: the proxy config through the proxy's own validator
   (every error with its path), the ``lab:`` settings against what the lab declares, and
   the names the sandbox can serve (listeners and backends of this lab). Problems raise
   `RunRefused` before anything starts.
2. **Sandbox**: the learner's own (``options.sandbox_id``) or a throwaway one, always
   started afresh from the lab's *starting topology* (the driver's create: one proxy and
   its toy backends on their own ports; ~1 s), so no health state, sticky table or
   ejection of an earlier run leaks into this measurement. The service's cap
   (``max_sandboxes``) refuses a run when the machine is full. A lab may swap a toy
   backend for another app (gunicorn, lab 14) or put sessions in Redis.
   Where: ``options.driver``, the site's driver (labs/services/sandboxes.py builds it from
   the settings: processes, containers, swarm), or local processes of this run's own
   (``SandboxService``) when none is given. A lab that driver cannot serve falls back to
   processes or is refused (placement.py); the run record says where it ran and why.
3. **Record**: the proxy's event stream is opened before anything changes.
4. **Apply** the learner's config through the admin API (``PUT /config``), with this
   sandbox's addresses put in; then wait until the pool is ready (every active backend
   eligible) or the lab's ``settle`` time passed.
5. **Traffic**: a headless locust process (traffic.py). Lab second 0 is the first request
   the proxy sees; the runner stops locust at 0 + duration.
6. **Faults**: the lab's schedule runs in threads at its lab times (set/clear faults, crash
   or restart a backend, admin verbs, a rolling deploy), and its watchers react to events
   (an autoscaler replacing unhealthy backends, a load-coupled deep health check). Each
   action goes into the timeline with the lab second it really happened at.
7. **Grade**: events (each with ``t``), locust's statistics and the timeline become a
   `Recording`, the lab's grader turns it into a `Result`; the sandbox's memory (PSS and
   RSS) and start time are measured; the run directory gets recording.json, result.json,
   the reports and trace.jsonl (the traffic as a replayable trace: replay_trace.py).

A lab with several balancers (``sandbox.proxies``) gets one proxy per name in the same
sandbox: the config goes to each, every event stream is recorded and tagged ``proxy``, a
``proxy:`` fault kills or restarts one, and labs/framework/pair.py runs what sits beside
them (a floating address, a DNS zone, a shared load report).

Progress goes to ``options.progress`` (a callable) and to ``<run_dir>/status.json``, which
the site polls while a run executes in its own process.
"""
from __future__ import annotations

import copy
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from labs.sandbox import addresses
from labs.sandbox.limits import Limits
from labs.sandbox.admin_client import AdminClient, AdminError, BackendControl
from labs.framework import placement as placements
from labs.framework import services
from labs.framework.definition import (Lab, check_config, check_settings,
                                       settings_with_defaults, split_document)
from labs.framework.grading import Result, ungradable
from labs.framework.recorder import EventRecorder, MultiRecorder
from labs.framework.recording import Recording
from labs.framework.traffic import LocustRun, TrafficFailed
from labs.framework.watchdog import PartWatch
from labs.sandbox import SandboxError, SandboxLimit, SandboxNotFound, SandboxService
from labs.sandbox.service import default_state_dir
from labs.problems import Problem


FIRST_REQUEST_S = 20.0  # from locust spawning its users to the first request the proxy sees
LOCUST_START_MAX_S = 120.0  # from locust's launch to its users spawning


def first_request_overdue(now: float, started: float, spawned_at: float | None) -> str | None:
    """Why the traffic's first request is overdue (monotonic seconds: locust launched at
    ``started``, spawned its users at ``spawned_at``), or None while it may still come."""
    if spawned_at is None:
        if now > started + LOCUST_START_MAX_S:
            return f"locust did not start its users within {LOCUST_START_MAX_S:g} s"
        return None
    if now > spawned_at + FIRST_REQUEST_S:
        return (f"no request reached the proxy within {FIRST_REQUEST_S:g} s of locust "
                "spawning its users")
    return None


class RunRefused(Problem):
    """The document cannot be run (HTTP 400, 503 when the lab host is full).

    Built from [(path, message)] as the proxy and the checks report them; ``errors`` is then
    the Problem's [{"path", "message"}] like every other user-fixable error."""

    status = 400

    def __init__(self, errors: list[tuple[str, str]], message: str | None = None,
                 status: int | None = None):
        pairs = [(p, m) for p, m in errors]
        super().__init__(message or "; ".join(f"{p}: {m}" if p else m for p, m in pairs),
                         [{"path": p, "message": m} for p, m in pairs], status)


class RunFailed(Exception):
    """The run itself broke (a part did not start, locust failed): not the learner's fault."""


@dataclass
class RunOptions:
    state_dir: Path | None = None
    sandbox_id: str | None = None  # the learner's sandbox; None: a throwaway one
    keep_sandbox: bool = False  # leave it running afterwards (the site; reaped when idle)
    max_sandboxes: int = 30
    run_dir: Path | None = None
    run_id: str | None = None
    progress: Callable[[dict], None] | None = None
    label: str = "config"  # "start", "solution", "config": for reports
    # The site's sandbox driver (labs/sandbox/drivers.py, as labs/services/sandboxes.py
    # builds it); None: local processes, a SandboxService of this run's own.
    driver: Any = None
    # A lab that driver cannot serve (placement.py): "processes" (run it there, saying so)
    # or "refuse".
    fallback: str = "processes"


@dataclass
class Outcome:
    run_id: str
    run_dir: Path
    recording: Recording
    result: Result
    document: dict
    label: str
    started_at: float
    seconds: float
    sandbox: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "slug": self.recording.slug, "label": self.label,
                "passed": self.result.passed, "graded": self.result.graded,
                "result": self.result.to_json(),
                "time_scale": self.recording.scale.to_json(), "seconds": round(self.seconds, 2),
                "started_at": self.started_at, "sandbox": self.sandbox,
                "stats": self.recording.stats, "timeline": self.recording.timeline,
                "notes": self.recording.notes, "phases": self.phases}


# ---------------------------------------------------------------- checking a document

def parse_document(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise RunRefused([("", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")])


def check_document(lab: Lab, doc: Any) -> tuple[dict, dict]:
    """(proxy config, lab settings with defaults) or RunRefused with every problem."""
    if not isinstance(doc, dict):
        raise RunRefused([("", "the config must be a mapping with listeners, routes, pools")])
    config, settings = split_document(doc)
    errors: list[tuple[str, str]] = []
    for line in check_config(config):
        path, sep, msg = line.partition(": ")
        errors.append((path, msg) if sep and " " not in path else ("", line))
    errors += check_settings(lab.spec, settings)
    if isinstance(config, dict):
        errors += _sandbox_fit(lab, config)
    if lab.proxy_names and not errors:
        from labs.framework import pair

        errors += pair.check_settings(lab, settings_with_defaults(lab.spec, settings))
    if errors:
        raise RunRefused(errors)
    return config, settings_with_defaults(lab.spec, settings)


def _sandbox_fit(lab: Lab, config: dict) -> list[tuple[str, str]]:
    """Names the sandbox cannot serve: a listener it has no port for, a backend it lacks."""
    errors = []
    listeners = list((lab.topology or {}).get("listeners") or {})
    for name in (config.get("listeners") or {}):
        if name not in listeners:
            errors.append((f"listeners.{name}", f"this lab's sandbox has a port for listener"
                           f"{'s' if len(listeners) > 1 else ''} {', '.join(listeners)} only; "
                           "keep that name"))
    errors += _files(config, "")
    names = lab.backend_names
    for pname, pool in (config.get("pools") or {}).items():
        for i, backend in enumerate((pool or {}).get("backends") or []):
            if isinstance(backend, dict) and backend.get("name") not in names:
                errors.append((f"pools.{pname}.backends[{i}].name",
                               f"this lab's sandbox runs backends {', '.join(names)}; "
                               f"nothing answers behind {backend.get('name')!r}"))
    return errors


_FILE_KEYS = {"cert", "key", "client_ca", "ca"}


def _files(node: Any, path: str) -> list[tuple[str, str]]:
    """A learner's config may name files of the lab PKI only (pki:...), never a path on
    the lab server."""
    errors = []
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in _FILE_KEYS and isinstance(value, str) and not value.startswith("pki:"):
                errors.append((sub, "in a lab, name a file of the lab PKI (pki:NAME.pem, "
                               "see `python -m proxy pki show`), not a path on the server"))
            else:
                errors += _files(value, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            errors += _files(value, f"{path}[{i}]")
    return errors


def place(config: dict, sb, inner_host: str, part: str = "proxy",
          listen_host: str | None = None) -> dict:
    """The config with this sandbox's addresses (listeners by name, backends by name), for
    its proxy ``part`` ("proxy", or one of a several-balancer sandbox's others).
    ``listen_host``: where the listeners bind when that is not the host of the record's
    URLs (a container driver's ``listen_host``: a swarm sandbox on another node is
    reached on that node's address, which its own namespace does not have)."""
    from labs.sandbox.procs import connect_host

    out = copy.deepcopy(config)
    admin = dict(out.get("admin") or {})
    admin["listen"] = f"{inner_host}:{sb.proxy_ports(part)['admin']}"
    out["admin"] = admin
    out["access_log"] = None  # the runner records the event stream itself
    listeners = sb.listeners if part == "proxy" else sb.proxies[part]["listeners"]
    for name, listener in (out.get("listeners") or {}).items():
        url = listeners[name]
        host_port = url.split("://", 1)[1]
        if listen_host:
            host_port = f"{listen_host}:{host_port.rpartition(':')[2]}"
        listener["bind"] = host_port
    for pool in (out.get("pools") or {}).values():
        for backend in (pool or {}).get("backends") or []:
            if backend.get("name") in sb.backends:
                backend["address"] = f"{connect_host(inner_host)}:{sb.ports[backend['name']]}"
    return out


# ---------------------------------------------------------------- the run

class _Run:
    def __init__(self, lab: Lab, document: dict, options: RunOptions):
        self.lab = lab
        self.spec = lab.spec
        self.document = document
        self.options = options
        self.state_dir = Path(options.state_dir or default_state_dir())
        self.run_id = options.run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.run_dir = Path(options.run_dir or self.state_dir / "labruns" / self.run_id)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.service = None  # the driver, once placed (place_sandbox)
        self.placement: placements.Placement | None = None
        self.sandbox_id = options.sandbox_id or f"lab-{lab.slug[:24]}-{secrets.token_hex(3)}"
        self.sb = None
        self.admin: AdminClient | None = None
        # Several balancers (sandbox.proxies): lab name -> its admin client; the first is
        # also ``admin``. One proxy: {} (everything goes through ``admin``, as always).
        self.admins: dict[str, AdminClient] = {}
        self.recorder: EventRecorder | MultiRecorder | None = None
        self.traffic: LocustRun | None = None
        self.t0: float | None = None  # wall time of lab second 0
        self.timeline: list[dict] = []
        self.notes: list[str] = []
        self._tl_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._backend_locks: dict[str, threading.Lock] = {}
        self.config: dict = {}
        self.settings: dict = {}
        self.phases: dict[str, float] = {}  # phase -> seconds since the run began
        self.pki_dir: Path | None = None
        self.watch: PartWatch | None = None
        self.broken: list[dict] = []  # what died while the traffic ran
        self._began = time.monotonic()

    # -- progress ----------------------------------------------------------------------

    def progress(self, phase: str, message: str, fraction: float) -> None:
        self.phases.setdefault(phase, round(time.monotonic() - self._began, 3))
        status = {"run_id": self.run_id, "slug": self.lab.slug, "state": "running",
                  "phase": phase, "message": message, "progress": round(fraction, 3),
                  "updated_at": time.time()}
        _write_json(self.run_dir / "status.json", status)
        if self.options.progress:
            self.options.progress(status)

    def lab_t(self, wall: float | None = None) -> float:
        wall = time.time() if wall is None else wall
        return round(wall - self.t0, 3) if self.t0 else 0.0

    def mark(self, kind: str, what: str, label: str | None = None, **extra) -> dict:
        entry = {"t": self.lab_t(), "kind": kind, "what": what, "label": label or what, **extra}
        with self._tl_lock:
            self.timeline.append(entry)
        return entry

    # -- steps -------------------------------------------------------------------------

    def place_sandbox(self) -> None:
        """Choose the driver (placement.py): the site's, unless the lab needs processes."""
        site = self.options.driver.name if self.options.driver is not None \
            else placements.PROCESSES
        self.placement = placements.decide(self.spec, self.settings, self.config, site,
                                           self.options.fallback)
        if self.placement.refused:
            raise RunRefused([("", self.placement.message())], self.placement.message(),
                             status=409)
        if self.placement.driver == placements.PROCESSES:
            self.service = SandboxService(self.state_dir, max_sandboxes=self.options.max_sandboxes,
                                          start_timeout=30.0, limits=Limits.from_env())
        else:
            self.service = self.options.driver
        if self.placement.fell_back:
            # The site's pages and reaper see the site's driver's sandboxes only: a process
            # sandbox left running would be nobody's to watch or stop.
            self.options.keep_sandbox = False
            self.notes.append(self.placement.message())

    def start_sandbox(self) -> None:
        self.place_sandbox()
        self.progress("sandbox", f"starting sandbox {self.sandbox_id} "
                      f"({self.placement.driver})", 0.02)
        try:
            self.service.stop(self.sandbox_id, grace=2.0)
        except SandboxNotFound:
            pass
        redis_url = None
        if self.settings.get("sessions", "redis" if self.spec.sandbox.redis else "memory") \
                == "redis":
            redis_url = services.redis_url(self.state_dir)
        topology, _ = split_document(self.lab.topology)
        if self.spec.sandbox.pki:
            self.pki_dir = services.ensure_pki(self.spec.sandbox.pki)
        # Only what a lab uses: a container driver takes no extra proxies or floating ports
        # (placement.py keeps such labs on processes).
        extra = {k: v for k, v in (("extra_proxies", self.lab.proxy_names[1:]),
                                   ("floating", self.spec.sandbox.floating),
                                   ("redis_url", redis_url)) if v}
        if self.placement.driver != placements.PROCESSES:
            extra["timeout"] = 60.0  # a container's start is CPU under its cap: a busy host
        try:
            self.sb = self.service.create(self.sandbox_id, backends=self.lab.backend_names,
                                          config=topology, **extra)
        except SandboxLimit as exc:
            raise RunRefused([("", str(exc))], f"the lab host is full: {exc}",
                             status=503) from None
        except SandboxError as exc:
            raise RunFailed(f"the sandbox did not start: {exc}") from None
        for name, app in self.spec.sandbox.apps.items():
            services.start_app(self.service, self.sandbox_id, name, app)
        self.sb = self.service.get(self.sandbox_id)
        token = ((self.config.get("admin") or {}).get("token")
                 or ((topology.get("admin") or {}).get("token")))
        self.admin = AdminClient(self.sb.admin_url, timeout=5.0, token=token)
        self.token = token
        self.admins = {name: AdminClient(self.sb.admin_url_of(self.part_of(name)), timeout=5.0,
                                         token=token) for name in self.lab.proxy_names}

    def part_of(self, proxy: str) -> str:
        """The sandbox part of the lab's balancer ``proxy`` (the first is "proxy")."""
        names = self.lab.proxy_names
        if proxy not in names:
            raise ValueError(f"this lab has no balancer {proxy!r}; it has {', '.join(names)}")
        return "proxy" if proxy == names[0] else proxy

    def open_recorder(self) -> None:
        if not self.lab.proxy_names:
            self.recorder = EventRecorder(self.sb.admin_url, token=self.token).start()
            return
        urls = {name: self.sb.admin_url_of(self.part_of(name)) for name in self.lab.proxy_names}
        self.recorder = MultiRecorder(urls, token=self.token).start()

    def placed_for(self, proxy: str) -> dict:
        """The learner's config with the addresses of the lab's balancer ``proxy``."""
        return place(self.config, self.sb, self.sb.inner_host, self.part_of(proxy),
                     getattr(self.service, "listen_host", None))
    def apply_config(self) -> None:
        self.progress("config", "applying your config through the admin API", 0.1)
        placed = place(self.config, self.sb, self.sb.inner_host,
                       listen_host=getattr(self.service, "listen_host", None))
        outside = addresses.check_config(placed, self.sb)  # the address rule (issue 12)
        if outside:
            raise RunRefused([(e["path"], e["message"]) for e in outside],
                             "your config points outside your sandbox: nothing was run")
        try:
            self.admin.token = (self.config.get("admin") or {}).get("token") or self.token
            self.admin.put_config(placed)
            for name in self.lab.proxy_names[1:]:  # the others: the same config, own ports
                self.admins[name].token = self.admin.token
                self.admins[name].put_config(self.placed_for(name))
        except AdminError as exc:
            errors = [(e.get("path", ""), e.get("message", "")) for e in exc.errors]
            raise RunRefused(errors, f"the proxy refused the config: {exc.message}") from None
        self.mark("config", "config applied through PUT /config", chart=False)

    def settle(self) -> None:
        self.progress("settle", "waiting until the pool's backends are ready", 0.15)
        deadline = time.monotonic() + self.spec.settle
        waiting: list[str] = []
        admins = list(self.admins.items()) or [("", self.admin)]
        while time.monotonic() < deadline:
            waiting = []
            for proxy, admin in admins:
                state = admin.state()
                waiting += [f"{proxy + ': ' if proxy else ''}{p}/{b['name']} ({b.get('health')})"
                            for p, pool in (state.get("pools") or {}).items()
                            for b in pool.get("backends") or []
                            if b.get("intent") == "active" and not b.get("eligible")]
            if not waiting:
                break
            time.sleep(0.05)
        if waiting:
            self.notes.append(f"not eligible when the traffic started (after "
                              f"{self.spec.settle:g} s of waiting): {', '.join(waiting)}")
        for name, url in self.sb.backends.items():
            if name in self.spec.sandbox.apps:
                continue
            try:
                BackendControl(url).call("DELETE", "/_control/stats")
            except AdminError:
                pass
        self.apply_backend_settings()

    def apply_backend_settings(self) -> None:
        """The lab: settings that are toy backend knobs (``backend_knob``), on every toy
        backend, before the traffic starts."""
        knobs = {s.backend_knob: self.settings[key]
                 for key, s in self.spec.lab_settings.items()
                 if s.backend_knob and key in self.settings}
        if not knobs:
            return
        for name, url in self.sb.backends.items():
            if name not in self.spec.sandbox.apps:
                BackendControl(url, timeout=3).set_faults(knobs)
        self.mark("config", f"every server: {_knobs(knobs)} (lab settings)", chart=False)

    def start_traffic(self) -> None:
        t = self.spec.traffic
        self.progress("traffic", f"starting {t.users} locust users", 0.2)
        env = dict(t.env)
        # Every listener's URL (a lab with one node per zone sends clients to each) and the
        # learner's lab: settings (how the lab's clients behave), for the locustfile.
        env["LBLAB_LISTENERS"] = json.dumps(self.sb.listeners)
        env["LBLAB_SETTINGS"] = json.dumps(self.settings, default=str)
        if self.pki_dir is not None:
            env["LBLAB_PKI_DIR"] = str(self.pki_dir)
        env.update(self.pair_env())
        self.traffic = LocustRun(self.lab.locustfile(), self.sb.proxy_url, t.users,
                                 t.spawn_rate, t.duration + 15, self.run_dir,
                                 env=env, extra_path=self.lab.folder)
        launched = time.time()
        self.traffic.start()
        # The first request is due within FIRST_REQUEST_S of locust spawning its users, not
        # of its launch: on a busy machine (a cohort) locust's own start takes longer.
        started, spawned_at = time.monotonic(), None
        while True:
            now = time.monotonic()
            if spawned_at is None and self.traffic.spawning():
                spawned_at = now
            # At L7 the first request; at L4 (no requests, only connections) the first
            # connection the traffic opens.
            first = next((e for e in self.recorder.since(launched)
                          if e.get("type") in ("request", "connection_open", "connection")),
                         None)
            if first is not None:
                took = (first.get("latency_ms") if first["type"] == "request"
                        else first.get("duration_ms") if first["type"] == "connection" else 0)
                self.t0 = first["ts"] - float(took or 0) / 1000.0
                break
            if not self.traffic.running():
                self.traffic.check()
                raise RunFailed(f"locust ended before sending a request; log: "
                                f"{self.traffic.log_path}")
            late = first_request_overdue(now, started, spawned_at)
            if late:
                self.traffic.stop()
                raise RunFailed(f"{late}; log: {self.traffic.log_path}")
            time.sleep(0.02)
        self.mark("traffic", f"traffic starts: {t.users} users ({self.traffic.locustfile.name})",
                  label="traffic starts", chart=False)

    def pair_env(self) -> dict[str, str]:
        """What a several-balancer lab's traffic needs: each balancer's and floating
        address's URL, where to log what clients saw, the DNS zone (the lab settings are
        in LBLAB_SETTINGS for every lab)."""
        if not self.lab.proxy_names:
            return {}
        from labs.sandbox.procs import url_host

        host = url_host(self.sb.host)
        return {"LBLAB_PROXIES": json.dumps({n: self.sb.proxy_url_of(self.part_of(n))
                                             for n in self.lab.proxy_names}),
                "LBLAB_FLOATING": json.dumps({n: f"http://{host}:{port}"
                                              for n, port in self.sb.floating.items()}),
                "LBLAB_CLIENT_LOG": str(self.run_dir / CLIENT_LOG),
                "LBLAB_ZONE": str(self.run_dir / ZONE_FILE)}

    def run_faults(self) -> None:
        self._start_watchdog()
        actions: list[tuple[float, Callable[[], None], str | None]] = []
        for fault in self.spec.faults:
            actions += self._expand(fault)
        for watcher in self.spec.watchers:
            self._start_watcher(watcher)
        actions.sort(key=lambda a: a[0])
        for at, fn, backend in actions:
            th = threading.Thread(target=self._at, args=(at, fn, backend), daemon=True)
            th.start()
            self._threads.append(th)

    def _at(self, at: float, fn: Callable[[], None], backend: str | None) -> None:
        delay = self.t0 + at - time.time()
        if delay > 0 and self._stop.wait(delay):
            return
        lock = self._backend_locks.setdefault(backend or "", threading.Lock()) if backend \
            else None
        try:
            if lock:
                with lock:
                    fn()
            else:
                fn()
        except Exception as exc:  # the timeline says what failed; the run goes on
            self.mark("error", f"action failed: {exc}", chart=False)

    def _expand(self, f) -> list[tuple[float, Callable[[], None], str | None]]:
        label = f.label
        b = f.backend
        if f.set is not None and f.every is not None:
            out = []
            undo = {k: _default_knob(k) for k in f.set}
            t = f.at
            end = f.until if f.until is not None else self.spec.traffic.duration
            while t < end:
                out.append((t, lambda: self._control(b, f.set, label or f"{b}: spike "
                                                     f"{_knobs(f.set)}", chart=False), b))
                out.append((t + f.for_, lambda: self._control(b, undo, f"{b}: spike over",
                                                              chart=False), b))
                t += f.every
            self.mark("fault", f"{b}: {_knobs(f.set)} for {f.for_:g}s every {f.every:g}s "
                      f"from {f.at:g}s", label=label or f"{b} spikes", backend=b, chart=False,
                      planned=True)
            return out
        if f.set is not None:
            return [(f.at, lambda: self._control(b, f.set, label or f"{b}: {_knobs(f.set)}"), b)]
        if f.clear:
            return [(f.at, lambda: self._clear(b, label), b)]
        if f.proxy and f.crash:
            return [(f.at, lambda: self._crash_proxy(f.proxy, label), f"proxy:{f.proxy}")]
        if f.proxy and f.stop:
            return [(f.at, lambda: self._stop_proxy(f.proxy, label), f"proxy:{f.proxy}")]
        if f.proxy and f.restart is not None:
            return [(f.at, lambda: self._restart_proxy(f.proxy, label), f"proxy:{f.proxy}")]
        if f.crash:
            return [(f.at, lambda: self._crash(b, label), b)]
        if f.restart is not None:
            return [(f.at, lambda: self._restart(b, f.restart, label), b)]
        if f.admin:
            return [(f.at, lambda: self._admin(f.admin, f.pool, b, f.weight, label), b)]
        if f.note:
            return [(f.at, lambda: self.mark("note", f.note, label=label or f.note), None)]
        if f.deploy is not None:
            return [(f.at, lambda: self._deploy(f.deploy, f.pool), None)]
        return []

    # -- actions -------------------------------------------------------------------------

    def _control(self, backend: str, knobs: dict, label: str, chart: bool = True) -> None:
        BackendControl(self.sb.backends[backend], timeout=3).set_faults(knobs)
        self.mark("fault", f"{backend}: {_knobs(knobs)}", label=label, backend=backend,
                  chart=chart)

    def _clear(self, backend: str, label: str | None) -> None:
        BackendControl(self.sb.backends[backend], timeout=3).clear_faults()
        self.mark("fault", f"{backend}: faults cleared", label=label or f"{backend} recovers",
                  backend=backend)

    def _crash(self, backend: str, label: str | None) -> None:
        self.watch.expect(backend)  # planned: stays down until the lab restarts it
        BackendControl(self.sb.backends[backend], timeout=3).crash()
        self.mark("fault", f"{backend}: process crashed (POST /_control/crash)",
                  label=label or f"{backend} crashes", backend=backend)

    def _crash_proxy(self, proxy: str, label: str | None) -> None:
        """The balancer's process dies at once (SIGKILL: no draining, its sockets close)."""
        part = self.part_of(proxy)
        self.watch.expect(part)  # planned: stays down unless the lab restarts it
        self.recorder.expect_end(proxy)
        self.service.kill_part(self.sandbox_id, part)
        self.mark("fault", f"{proxy}: balancer process killed (SIGKILL)",
                  label=label or f"{proxy} dies", proxy=proxy)

    def _stop_proxy(self, proxy: str, label: str | None) -> None:
        """SIGTERM: the balancer stops accepting, drains what it holds and exits (SIGKILL
        after 5 s, as the sandbox stops any part)."""
        from labs.sandbox import procs

        part = self.part_of(proxy)
        self.watch.expect(part)
        self.recorder.expect_end(proxy)
        sb = self.service.get(self.sandbox_id)
        self.mark("fault", f"{proxy}: balancer asked to stop (SIGTERM: drain, then exit)",
                  label=label or f"{proxy} stops", proxy=proxy)
        procs.stop_groups([(sb.pids[part], sb.pid_starts.get(part))], grace=5.0,
                          popens=[p for k, p in self.service._popens.items()  # noqa: SLF001
                                  if k == (sb.id, part)])
        self.mark("fault", f"{proxy}: balancer exited", label=f"{proxy} gone", proxy=proxy,
                  chart=False)

    def _restart_proxy(self, proxy: str, label: str | None) -> None:
        """Start the balancer again and give it the learner's config (what it had)."""
        part = self.part_of(proxy)
        self.watch.expect(part)
        self.mark("fault", f"{proxy}: balancer process starts again",
                  label=label or f"{proxy} restarts", proxy=proxy)
        try:
            self.service.restart_proxy(self.sandbox_id, wait=True, part=part)
        finally:
            self.watch.settled(part, self._part_id(part))
        self.admins[proxy].put_config(self.placed_for(proxy))
        self.recorder.reopen(proxy)
        self.mark("fault", f"{proxy}: up again with your config", label=f"{proxy} up",
                  proxy=proxy, chart=False)

    def _restart(self, backend: str, faults: dict, label: str | None) -> None:
        self.mark("fault", f"{backend}: process starts again", label=label or
                  f"{backend} restarts", backend=backend)
        self._restart_backend(backend)
        if faults:
            BackendControl(self.sb.backends[backend], timeout=3).set_faults(faults)
        self.mark("fault", f"{backend}: up again" + (f" with {_knobs(faults)}" if faults else ""),
                  label=f"{backend} up" + (f" ({_knobs(faults)})" if faults else ""),
                  backend=backend, chart=False)

    def _admin(self, verb: str, pool: str, backend: str, weight: int | None,
               label: str | None) -> None:
        a = self.admin
        if verb == "drain":
            a.set_intent(pool, backend, "drain")
            what = f"admin: drain {backend} (POST /pools/{pool}/backends/{backend}/drain)"
        elif verb == "remove":
            a.remove_backend(pool, backend, drain=True)
            what = f"admin: deregister {backend} (DELETE ...?drain=1)"
        elif verb == "remove_now":
            a.remove_backend(pool, backend)
            what = f"admin: remove {backend} at once"
        elif verb == "add":
            a.add_backend(pool, backend, self._address(backend))
            what = f"admin: add {backend} to pool {pool}"
        elif verb == "weight":
            a.set_weight(pool, backend, weight)
            what = f"admin: weight of {backend} = {weight}"
        else:
            a.set_intent(pool, backend, verb)
            what = f"admin: {verb} {backend}"
        self.mark("admin", what, label=label or what.removeprefix("admin: ").split(" (")[0],
                  backend=backend)

    def _address(self, backend: str) -> str:
        from labs.sandbox.procs import connect_host

        return f"{connect_host(self.sb.inner_host)}:{self.sb.ports[backend]}"

    def _deploy(self, spec: dict, pool: str) -> None:
        """A rolling deploy: each backend in turn gets a new process (the new version)."""
        plan = self.settings.get("deploy") or {}
        drain_first = bool(plan.get("drain_first"))
        wait_healthy = bool(plan.get("wait_until_healthy"))
        warmup = float(spec.get("warmup_s", 1))
        step_timeout = float(spec.get("step_timeout_s", 6))
        self.mark("deploy", f"rolling deploy starts (drain_first={drain_first}, "
                  f"wait_until_healthy={wait_healthy})", label="deploy starts")
        for name in spec.get("backends") or []:
            if self._stop.is_set():
                return
            if drain_first:
                self._admin("remove", pool, name, None, f"deregister {name}")
                self._wait_for(lambda: name not in self._pool_names(pool), step_timeout)
                self.mark("deploy", f"{name} deregistered (drain done)", backend=name,
                          label=f"{name} out", chart=False)
            self.mark("deploy", f"{name}: old process stopped, new version starting",
                      backend=name, label=f"restart {name}")
            self._restart_backend(name)
            BackendControl(self.sb.backends[name], timeout=3).set_faults({"warmup_s": warmup})
            if drain_first:
                self._admin("add", pool, name, None, f"register {name}")
            if wait_healthy:
                ok = self._wait_for(lambda: self._eligible(pool, name), step_timeout)
                self.mark("deploy", f"{name} " + ("passes its checks: in service" if ok else
                          f"not in service after {step_timeout:g}s"), backend=name,
                          label=f"{name} ready" if ok else f"{name} not ready", chart=False)
            else:
                self._stop.wait(float(plan.get("pause_s", 0)))
        self.mark("deploy", "rolling deploy done", label="deploy done")

    def _pool_names(self, pool: str) -> list[str]:
        return [b["name"] for b in ((self.admin.state().get("pools") or {}).get(pool) or {})
                .get("backends") or []]

    def _eligible(self, pool: str, name: str) -> bool:
        for b in ((self.admin.state().get("pools") or {}).get(pool) or {}).get("backends") or []:
            if b["name"] == name:
                return bool(b.get("eligible"))
        return False

    def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                if predicate():
                    return True
            except AdminError:
                pass
            time.sleep(0.05)
        return False

    def _restart_backend(self, name: str) -> None:
        """Start backend ``name`` again: a planned change, not a death (watchdog.py)."""
        self.watch.expect(name)
        try:
            self.service.restart_backend(self.sandbox_id, name, wait=True)
        finally:
            self.watch.settled(name, self._part_id(name))

    # -- the watchdog ----------------------------------------------------------------------

    def _part_id(self, part: str) -> int | None:
        """The part's process id now (None: not known, or the sandbox is gone)."""
        try:
            return self.service.part_states(self.sandbox_id).get(part, (None, False))[0]
        except SandboxError:
            return None

    def _start_watchdog(self) -> None:
        states = self.service.part_states(self.sandbox_id)
        self.watch = PartWatch({part: pid for part, (pid, _) in states.items()})
        th = threading.Thread(target=self._watchdog, name="lab-watchdog", daemon=True)
        th.start()
        self._threads.append(th)

    def _watchdog(self) -> None:
        while not self._stop.wait(0.1):
            self._check_parts()

    def _check_parts(self) -> None:
        try:
            parts = self.service.part_states(self.sandbox_id)
        except SandboxError as exc:
            self._broke("sandbox", f"the sandbox's record is gone ({exc})")
            return
        for death in self.watch.check(self.lab_t(), parts):
            self._broke(death["part"], death["what"], death["t"])

    def _broke(self, part: str, what: str, t: float | None = None) -> None:
        entry = {"t": self.lab_t() if t is None else t, "part": part, "what": what}
        with self._tl_lock:
            if any(b["part"] == part and b["what"] == what for b in self.broken):
                return
            self.broken.append(entry)
        self.mark("broken", what, label=f"{part} died" if part not in ("traffic",
                  "event stream") else f"{part} failed", t=entry["t"])

    # -- watchers ------------------------------------------------------------------------

    def _start_watcher(self, watcher) -> None:
        from labs.framework import pair

        if pair.start_watcher(self, watcher):
            return
        if watcher.replace_when_unhealthy is not None:
            self._watch_replace(watcher.replace_when_unhealthy)
        elif watcher.load_coupled_health is not None:
            th = threading.Thread(target=self._load_coupled, daemon=True,
                                  args=(watcher.load_coupled_health,))
            th.start()
            self._threads.append(th)
        elif watcher.canary is not None:
            th = threading.Thread(target=self._canary, daemon=True, args=(watcher,))
            th.start()
            self._threads.append(th)

    def _canary(self, watcher) -> None:
        """The rollout controller: every 50 ms, the canary's requests so far go to the pure
        rollout (canary.py); each step and a rollback become a weight change through the
        admin API and a timeline entry with its numbers and why."""
        from labs.framework.canary import CanaryError, Rollout, Rule

        plan = watcher.canary_plan()
        name, pool = plan.canary, plan.pool
        try:
            rule = Rule.from_settings(dict(self.settings.get("canary") or {}))
            backends = (self.admin.state().get("pools") or {}).get(pool, {}).get("backends") or []
            stable = sum(int(b.get("weight", 1)) for b in backends if b["name"] != name)
            rollout = Rollout(plan, rule, stable)
        except (CanaryError, AdminError) as exc:
            self.mark("error", f"the canary rollout cannot start: {exc}", chart=False)
            return
        while True:
            now = self.lab_t()
            seen = [(round(e["ts"] - self.t0, 3), int(e.get("status") or 0),
                     float(e.get("latency_ms") or 0))
                    for e in self.recorder.since(self.t0 - 1)
                    if e.get("type") == "request" and e.get("backend") == name]
            for action in rollout.tick(now, seen):
                try:
                    self.admin.set_weight(pool, name, action["weight"])
                except AdminError as exc:
                    self.mark("error", f"canary: weight change refused: {exc}", chart=False)
                    continue
                label = (f"canary {action['percent']:g}%" if action["action"] == "step"
                         else "canary rolled back")
                self.mark("canary", f"canary: {action['why']}", label=label, backend=name,
                          canary=action)
            if self._stop.wait(0.05):
                return

    def _watch_replace(self, spec: dict) -> None:
        """An autoscaler with load-balancer health checks: an instance the proxy marks
        unhealthy is terminated and a new one launched (same name, a new process, warming
        up again), registered as a new target."""
        name, pool = spec["backend"], spec.get("pool", "web")
        faults = spec.get("faults") or {}
        limit = int(spec.get("max", 6))
        queue: list[dict] = []
        cond = threading.Condition()

        def on_event(e: dict) -> None:
            if (e.get("type") == "state_change" and e.get("backend") == name
                    and e.get("kind") == "health" and e.get("new") == "unhealthy"):
                with cond:
                    queue.append(e)
                    cond.notify()

        def worker() -> None:
            done = 0
            while not self._stop.is_set() and done < limit:
                with cond:
                    if not queue:
                        cond.wait(0.1)
                    if not queue:
                        continue
                    queue.clear()
                done += 1
                try:
                    self.mark("autoscaler", f"autoscaler: {name} failed its health checks; "
                              f"terminating it and launching a replacement ({done})",
                              label=f"replace {name} #{done}", backend=name)
                    self.admin.remove_backend(pool, name)
                    self._restart_backend(name)
                    if faults:
                        BackendControl(self.sb.backends[name], timeout=3).set_faults(faults)
                    self.admin.add_backend(pool, name, self._address(name))
                    self.mark("autoscaler", f"autoscaler: replacement {name} registered",
                              label=f"{name} registered", backend=name, chart=False)
                except Exception as exc:
                    self.mark("error", f"autoscaler failed: {exc}", chart=False)

        self.recorder.add_listener(on_event)
        th = threading.Thread(target=worker, daemon=True)
        th.start()
        self._threads.append(th)

    def _load_coupled(self, spec: dict) -> None:
        """Model of a deep health check that queries a shared dependency: its latency is
        base_ms + ms_per_rps x (the requests per second this backend serves)."""
        base_spec = spec.get("base_ms", 20)  # a number, or backend -> number
        per = float(spec.get("ms_per_rps", 10))
        names = spec.get("backends") or list(self.sb.backends)
        window = float(spec.get("window_s", 0.5))
        last: dict[str, int] = {}
        while not self._stop.wait(0.1):
            now = time.time()
            recent = [e for e in self.recorder.since(now - window) if e.get("type") == "request"]
            for name in names:
                rps = sum(1 for e in recent if e.get("backend") == name) / window
                base = float(base_spec.get(name, 20) if isinstance(base_spec, dict)
                             else base_spec)
                value = int(round((base + per * rps) / 10.0) * 10)
                if abs(value - last.get(name, -1000)) >= 10:
                    try:
                        BackendControl(self.sb.backends[name], timeout=2).set_faults(
                            {"health_latency_ms": value})
                    except AdminError:
                        continue
                    if abs(value - last.get(name, -1000)) >= 50:
                        self.mark("model", f"{name}: deep check takes {value} ms at {rps:.0f} "
                                  "req/s", backend=name, chart=False, value=value, rps=rps)
                    last[name] = value

    # -- end -------------------------------------------------------------------------------

    def finish_traffic(self) -> None:
        t = self.spec.traffic
        end = self.t0 + t.duration
        while time.time() < end:
            frac = 0.2 + 0.7 * min(1.0, (time.time() - self.t0) / t.duration)
            self.progress("traffic", f"traffic and faults: {self.lab_t():.1f} of "
                          f"{t.duration:g} lab seconds", frac)
            if not self.traffic.running():
                rc = self.traffic.proc.returncode if self.traffic.proc else None
                self._broke("traffic", f"the traffic generator (locust) exited with status "
                            f"{rc} at lab second {self.lab_t():.1f}, before the end of the "
                            f"traffic; log: {self.traffic.log_path}")
                break
            time.sleep(min(0.25, max(0.0, end - time.time())))
        self.traffic.stop()
        self.mark("traffic", "traffic ends", chart=False)
        if self.watch is not None:
            self._check_parts()  # a death in the last moments counts too
        self._stop.set()
        self.recorder.wait_quiet(0.3, 3.0)

    def build_recording(self) -> Recording:
        events = self.recorder.stop() + _client_events(self.run_dir / CLIENT_LOG)
        for e in events:
            e["t"] = round(float(e.get("ts", 0)) - self.t0, 4)
        if self.recorder.gaps:
            self.notes.append(f"the event stream dropped {self.recorder.gaps} events: the "
                              "recording is incomplete")
        if self.recorder.error:
            self.notes.append(self.recorder.error)
            ended = self.recorder.ended_at
            if ended is not None and ended < self.t0 + self.spec.traffic.duration:
                self._broke("event stream", f"{self.recorder.error}; nothing after it was "
                            "recorded", self.lab_t(ended))
        stats = self.traffic.stats()
        self.timeline.sort(key=lambda m: m["t"])
        return Recording(
            slug=self.lab.slug, time_scale=self.spec.time_scale, t0=self.t0,
            duration=self.spec.traffic.duration, config=self.config, settings=self.settings,
            events=events, stats=stats, timeline=self.timeline, targets=dict(self.spec.targets),
            answers=self.settings.get("answers"),
            traffic={"locustfile": self.traffic.locustfile.name, "users": self.spec.traffic.users,
                     "driver": "locust", "ended_at": self.lab_t(self.traffic.ended_at)},
            sandbox=self.sandbox_figures(), notes=self.notes,
            broken=sorted(self.broken, key=lambda b: b["t"]))

    def sandbox_figures(self) -> dict:
        sb = self.service.get(self.sandbox_id)
        try:
            pss = self.service.measure(self.sandbox_id, "pss")
            # A container's engine gives one figure for both (and takes a second to).
            rss = (self.service.measure(self.sandbox_id, "rss")
                   if self.placement.driver == placements.PROCESSES else pss)
        except Exception:  # measuring is best effort (a part may have just died)
            pss = rss = {}
        return {"id": sb.id, "start_seconds": sb.start_seconds, "pss_bytes": pss,
                "rss_bytes": rss, "parts": len(sb.part_names),
                "placement": self.placement.to_json()}

    def cleanup(self) -> None:
        self._stop.set()
        if self.traffic is not None:
            self.traffic.stop()
        if self.recorder is not None:
            self.recorder.stop()
        for th in self._threads:
            th.join(timeout=8)
        if self.service is None:  # refused before anything was started
            return
        if not self.options.keep_sandbox:
            try:
                self.service.stop(self.sandbox_id, grace=2.0)
            except SandboxError:
                pass
        else:
            try:
                self.service.touch(self.sandbox_id)
            except SandboxError:
                pass


def run_lab(lab: Lab, document: dict | str, options: RunOptions | None = None) -> Outcome:
    """Run ``lab`` with the learner's document (YAML text or parsed); see the module doc."""
    options = options or RunOptions()
    if isinstance(document, str):
        document = parse_document(document)
    config, settings = check_document(lab, document)
    run = _Run(lab, document, options)
    run.config, run.settings = config, settings
    (run.run_dir / "document.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    started = time.time()
    try:
        try:
            run.start_sandbox()
            run.open_recorder()
            run.apply_config()
            run.settle()
            if run.lab.proxy_names:
                from labs.framework import pair

                pair.prepare(run)  # the floating address bound, the DNS zone written
            run.start_traffic()
            run.run_faults()
            run.finish_traffic()
        except (TrafficFailed, services.ServiceError, AdminError) as exc:
            raise RunFailed(str(exc)) from exc
        except RuntimeError as exc:  # the event stream did not open
            raise RunFailed(str(exc)) from exc
        run.progress("grading", "grading the recorded run", 0.95)
        recording = run.build_recording()
        result = grade(lab, recording)
    except BaseException as exc:
        state = "refused" if isinstance(exc, RunRefused) else "failed"
        _write_json(run.run_dir / "status.json", {
            "run_id": run.run_id, "slug": lab.slug, "state": state, "phase": "error",
            "message": str(exc), "errors": exc.errors if isinstance(exc, RunRefused) else [],
            "updated_at": time.time()})
        raise
    finally:
        run.cleanup()
    run.phases["done"] = round(time.monotonic() - run._began, 3)
    outcome = Outcome(run.run_id, run.run_dir, recording, result, document, options.label,
                      started, time.time() - started, recording.sandbox, run.phases)
    recording.save(run.run_dir / "recording.json")
    _save_trace(lab, recording, run)
    _write_json(run.run_dir / "result.json", outcome.to_json())
    from labs.framework import report

    report.write(lab, outcome, run.run_dir)
    _write_json(run.run_dir / "status.json", {
        "run_id": run.run_id, "slug": lab.slug, "state": "done", "phase": "done",
        "passed": result.passed, "graded": result.graded, "message": result.headline,
        "progress": 1.0,
        "updated_at": time.time()})
    return outcome


def _save_trace(lab: Lab, recording: Recording, run: "_Run") -> None:
    """trace.jsonl beside the recording: the traffic a replay sends again (replay_trace)."""
    from labs.framework import replay_trace

    try:
        trace = replay_trace.from_recording(recording, run.run_id, lab.backend_names)
    except replay_trace.TraceError:
        return  # nothing replayable (an L4 lab): replay says so when asked
    replay_trace.dump(trace, run.run_dir / replay_trace.FILENAME)


def grade(lab: Lab, recording: Recording) -> Result:
    if recording.broken:  # never graded as if normal: the measurement itself is broken
        return ungradable(recording)
    result = lab.grade(recording)
    if recording.notes:
        result.evidence = result.evidence + [f"NOTE  {n}" for n in recording.notes]
    return result


def regrade(lab: Lab, run_dir: Path, answers: dict | None = None) -> Outcome:
    """Grade a recorded run again (a tracing lab's answers arrive after the run)."""
    recording = Recording.load(Path(run_dir) / "recording.json")
    if answers is not None:
        recording.answers = answers
        recording.settings = {**recording.settings, "answers": answers}
    result = grade(lab, recording)
    data = json.loads((Path(run_dir) / "result.json").read_text())
    outcome = Outcome(data["run_id"], Path(run_dir), recording, result,
                      yaml.safe_load((Path(run_dir) / "document.yaml").read_text()) or {},
                      data.get("label", "config"), data.get("started_at", time.time()),
                      data.get("seconds", 0.0), data.get("sandbox", {}))
    if answers is not None:
        recording.save(Path(run_dir) / "recording.json")
        outcome.document = {**outcome.document, "lab": {**(outcome.document.get("lab") or {}),
                                                        "answers": answers}}
        (Path(run_dir) / "document.yaml").write_text(yaml.safe_dump(outcome.document,
                                                                   sort_keys=False))
    _write_json(Path(run_dir) / "result.json", outcome.to_json())
    from labs.framework import report

    report.write(lab, outcome, Path(run_dir))
    return outcome


# ---------------------------------------------------------------- helpers

# Several-balancer labs: what the clients saw (a refused connection reaches no balancer,
# so no proxy event tells it), one JSON object a line (labs/locust/lblab_common.py
# client_log), and the DNS zone the traffic's resolver reads (labs/framework/pair.py).
CLIENT_LOG = "client.jsonl"
ZONE_FILE = "zone.json"


def _client_events(path: Path) -> list[dict]:
    """The clients' lines as events of type "client" (each with ``ts``)."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short when locust was stopped
        if isinstance(e, dict) and "ts" in e:
            out.append({**e, "type": "client"})
    return out


def _default_knob(name: str) -> Any:
    """A knob's resting value (what a spike returns to), from the backends' own table."""
    from labs.backend.faults import DEFAULTS

    return DEFAULTS[name]


def _knobs(knobs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in knobs.items())


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)
