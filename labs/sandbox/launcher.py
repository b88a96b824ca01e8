"""The one-command lab: ``python manage.py lab`` (a thin wrapper around ``Launcher``).

Theory of operation
-------------------
1. Plan every part and its port (site, proxy, admin, each toy backend; in front-door mode
   the front listener, gunicorn and daphne) and check them all before starting anything;
   a taken port is refused with the part, the port and the option to change it.
2. Start: the default sandbox through ``SandboxService`` (proxy + toy backends, pinned so it
   is never reaped), ``manage.py migrate``, then the site on daphne (front door: gunicorn
   for pages, daphne for /ws/, and the sandbox's proxy config is compose-front.yaml's). The
   bridge runs as its own ``manage.py bridge`` process when there is a shared channel layer
   (REDIS_URL); without one the site runs it inside daphne (lblab/settings.py,
   LBLAB_EMBEDDED_BRIDGE), because an in-memory layer does not cross processes.
   Each part must answer before the next step; then the URL and a table of parts are printed.
3. Supervise: twice a second, every part's process is checked; a part that stops (or comes
   back, e.g. a backend the site restarted) is reported in the terminal and recorded in
   ``<state_dir>/launcher/<sandbox>.json`` (``read_status``), next to the sandbox's own
   record that ``SandboxService.parts`` reads. Nothing is restarted behind the learner's
   back: a dead backend is often the lesson.
4. Stop on SIGINT/SIGTERM/SIGHUP: site and bridge, then the sandbox, then everything the
   site started (lab runs, traffic, every learner's sandbox, the labs' Redis: cleanup.py);
   every part is its own process group, SIGTERM then SIGKILL after a grace, so nothing is
   left behind. The launcher also asks the kernel to SIGTERM its children should it die
   without cleaning up, and a start after a crash first stops what the earlier run
   recorded (by pid and start time, never by name).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from labs.sandbox import cleanup, procs, topology
from labs.sandbox.commands import (
    REPO_ROOT,
    bridge_cmd,
    daphne_cmd,
    gunicorn_cmd,
    local_executables,
    migrate_cmd,
)
from labs.sandbox.service import (
    PortInUse,
    Sandbox,
    SandboxError,
    SandboxService,
    default_state_dir,
)

URL_LINE = "LBLab is running at {url}"


class LaunchError(Exception):
    """The lab cannot start; the message says what to change."""


class Interrupted(Exception):
    pass


def parse_port_range(text: str) -> list[int]:
    """'9001-9004' or '9001,9003,9005' -> ports."""
    ports: list[int] = []
    try:
        for piece in text.split(","):
            piece = piece.strip()
            if "-" in piece:
                lo, hi = (int(x) for x in piece.split("-", 1))
                if hi < lo or hi - lo > 63:
                    raise ValueError
                ports += range(lo, hi + 1)
            elif piece:
                ports.append(int(piece))
    except ValueError:
        raise LaunchError(f"--backend-ports {text!r}: write a range such as 9001-9004 or a list "
                          "such as 9001,9002 (at most 64)") from None
    if not ports or any(not 1 <= p <= 65535 for p in ports):
        raise LaunchError(f"--backend-ports {text!r}: ports must be between 1 and 65535")
    return ports


def format_ports(ports: list[int]) -> str:
    if ports == list(range(ports[0], ports[0] + len(ports))):
        return f"{ports[0]}-{ports[-1]}" if len(ports) > 1 else str(ports[0])
    return ",".join(map(str, ports))


@dataclass
class LabOptions:
    host: str = "127.0.0.1"
    port: int = 8000  # the site (front door: the front proxy listener)
    proxy_port: int = 8080  # the proxy's lab listener
    admin_port: int = 9900
    backend_ports: list[int] | None = None  # default 9001.. (one per backend)
    backends: int = 4
    sandbox: str = "default"
    front_door: bool = False
    web_port: int | None = None  # front door: gunicorn (default port + 1)
    ws_port: int | None = None  # front door: daphne (default port + 2)
    bridge: str = "auto"  # auto | process | embedded
    state_dir: str | None = None
    migrate: bool = True
    grace: float = 5.0
    public: bool = False  # strangers reach the site (lblab/settings.py, LBLAB_PUBLIC)
    behind_tls: bool = False  # public, served over HTTPS by a TLS terminator in front

    def resolved_backend_ports(self) -> list[int]:
        return list(self.backend_ports or range(9001, 9001 + self.backends))


@dataclass
class Part:
    """A process the launcher runs itself (site, web, ws, bridge)."""

    name: str
    argv: list[str]
    port: int | None
    url: str
    probe: str | None  # HTTP path that must answer; None: alive for a moment is enough
    log: Path
    host: str = "127.0.0.1"  # where it listens
    proc: subprocess.Popen | None = None
    ticks: int | None = None
    alive: bool = False
    detail: str = ""


class Launcher:
    def __init__(self, options: LabOptions | None = None, out: TextIO | None = None,
                 executables: dict | None = None, env: dict | None = None):
        self.o = options or LabOptions()
        self.out = out or sys.stdout
        self.exe = executables or local_executables()
        self.state_dir = Path(self.o.state_dir) if self.o.state_dir else default_state_dir()
        self.log_dir = self.state_dir / "launcher" / self.o.sandbox
        self.status_path = self.state_dir / "launcher" / f"{self.o.sandbox}.json"
        self.base_env = dict(os.environ if env is None else env)
        self.service = SandboxService(self.state_dir, host=self.o.host, die_with_parent=True,
                                      python=self.exe["python"])
        self.sandbox: Sandbox | None = None
        self.parts: dict[str, Part] = {}
        self.sandbox_alive: dict[str, bool] = {}
        self.url = ""
        self._stop = threading.Event()
        self._started_sandbox = False

    # -- plan ------------------------------------------------------------------------------

    @property
    def bridge_mode(self) -> str:
        if self.o.bridge != "auto":
            return self.o.bridge
        return "process" if self.base_env.get("REDIS_URL", "").strip() else "embedded"

    def planned_ports(self) -> list[tuple[str, int, str]]:
        """(part, port, how to change it) for every port the lab will listen on."""
        o = self.o
        backend_ports = o.resolved_backend_ports()
        plan = [("site" if not o.front_door else "front door", o.port, "--port"),
                ("proxy", o.proxy_port, "--proxy-port"),
                ("admin", o.admin_port, "--admin-port")]
        if o.front_door:
            plan += [("web (gunicorn)", self.web_port, "--web-port"),
                     ("ws (daphne)", self.ws_port, "--ws-port")]
        plan += [(f"backend b{i}", port, "--backend-ports")
                 for i, port in enumerate(backend_ports, 1)]
        return plan

    @property
    def web_port(self) -> int:
        return self.o.web_port or self.o.port + 1

    @property
    def ws_port(self) -> int:
        return self.o.ws_port or self.o.port + 2

    def check_ports(self) -> None:
        """Refuse a port given twice or already taken, saying which part and what to pass."""
        plan = self.planned_ports()
        seen: dict[int, str] = {}
        for part, port, _ in plan:
            if not 1 <= port <= 65535:
                raise LaunchError(f"port {port} ({part}) is not a TCP port: use 1-65535")
            if port in seen:
                raise LaunchError(f"port {port} is given to both {seen[port]} and {part}: "
                                  "give each part its own port")
            seen[port] = part
        taken = set(seen)
        for part, port, option in plan:
            outer = part in ("site", "front door", "proxy")
            host = self.o.host if outer else self.service.inner_host
            if procs.port_free(host, port):
                continue
            if option == "--backend-ports":
                ports = self.o.resolved_backend_ports()
                alt = format_ports(self._free_block(len(ports), taken))
            else:
                alt = str(self._free_port_near(port, taken))
            raise LaunchError(f"port {port} ({part}) is already in use: pass {option} {alt}")

    def _free_port_near(self, port: int, taken: set[int]) -> int:
        start = port + 10000 if port + 10000 <= 65535 else 20000
        for candidate in range(start, 65536):
            if candidate not in taken and procs.port_free(self.o.host, candidate):
                return candidate
        return 0

    def _free_block(self, n: int, taken: set[int]) -> list[int]:
        first = self.o.resolved_backend_ports()[0]
        start = first + 10000 if first + 10000 + n <= 65535 else 20000
        for base in range(start, 65536 - n, n):
            block = list(range(base, base + n))
            if not taken & set(block) and all(procs.port_free(self.o.host, p) for p in block):
                return block
        return [0]

    # -- start -----------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _site_env(self) -> dict:
        env = dict(self.base_env)
        env.setdefault("DJANGO_SETTINGS_MODULE", "lblab.settings")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH"))
                                            if p)
        env["LBLAB_STATE_DIR"] = str(self.state_dir)
        env["LBLAB_SANDBOX"] = self.o.sandbox
        env["LBLAB_EMBEDDED_BRIDGE"] = "1" if self.bridge_mode == "embedded" else "0"
        if self.o.front_door:
            # Behind LBLab's own proxy the site sees it as the client; the proxy appends the
            # real client to X-Forwarded-For (the rate limits count per client address).
            env.setdefault("LBLAB_TRUST_FORWARDED", "1")
        if self.o.public:
            env["LBLAB_PUBLIC"] = "1"
            env["LBLAB_TLS"] = "1" if self.o.behind_tls else "0"
            env.setdefault("DEBUG", "0")
        return env

    def plan_parts(self) -> dict[str, Part]:
        """The processes the launcher runs itself, with their exact command lines."""
        o, ex = self.o, self.exe
        host = procs.url_host(o.host)
        parts: dict[str, Part] = {}
        if o.front_door:
            # Behind the front proxy: gunicorn and daphne stay on the inner (loopback) host.
            inner = self.service.inner_host
            ih = procs.url_host(inner)
            parts["web"] = Part("web", gunicorn_cmd(inner, self.web_port, gunicorn=ex["gunicorn"]),
                                self.web_port, f"http://{ih}:{self.web_port}/", "/",
                                self.log_dir / "web.log", inner)
            parts["ws"] = Part("ws", daphne_cmd(inner, self.ws_port, daphne=ex["daphne"]),
                               self.ws_port, f"http://{ih}:{self.ws_port}/", "/",
                               self.log_dir / "ws.log", inner)
        else:
            parts["site"] = Part("site", daphne_cmd(o.host, o.port, daphne=ex["daphne"]),
                                 o.port, f"http://{host}:{o.port}/", "/",
                                 self.log_dir / "site.log", o.host)
        if self.bridge_mode == "process":
            admin_url = f"http://{procs.url_host(self.service.inner_host)}:{o.admin_port}"
            parts["bridge"] = Part("bridge", bridge_cmd(admin_url, o.sandbox, python=ex["python"]),
                                   None, "", None, self.log_dir / "bridge.log")
        return parts

    def start(self) -> None:
        o = self.o
        self.check_ports()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not procs.is_loopback(o.host) and "ALLOWED_HOSTS" not in self.base_env:
            self._say(f"note: listening on {o.host}; set ALLOWED_HOSTS to the name learners "
                      "use to reach this machine")
        self.parts = self.plan_parts()
        self.url = f"http://{procs.url_host(o.host)}:{o.port}/"
        if o.front_door:
            # The site first: the front proxy's health checks then find it at once.
            self._migrate()
            self._start_parts(["web", "ws"])
            self._start_sandbox()
        else:
            self._start_sandbox()
            self._migrate()
            self._start_parts(["site"])
        if "bridge" in self.parts:
            self._start_parts(["bridge"])
        self._wait_routable()
        self.write_status()
        self._say(URL_LINE.format(url=self.url))
        self._say(self.table())
        self._say(f"logs: {self.log_dir} and {self.sandbox.log_dir}")
        self._say("Press Ctrl-C to stop everything.")

    def _start_sandbox(self) -> None:
        o = self.o
        names = [f"b{i}" for i in range(1, len(o.resolved_backend_ports()) + 1)]
        ports = {"proxy": o.proxy_port, "admin": o.admin_port,
                 **dict(zip(names, o.resolved_backend_ports()))}
        config = None
        if o.front_door:
            h = procs.connect_host(self.service.inner_host)
            config = topology.front_door_config(f"{h}:{self.web_port}", f"{h}:{self.ws_port}")
            ports["listener.front"] = o.port
        self._check_interrupted()
        try:
            self.sandbox = self.service.create(o.sandbox, backends=names, config=config,
                                               ports=ports, pinned=True)
        except PortInUse as exc:  # taken between the check and now
            raise LaunchError(f"port {exc.port} ({exc.part}) is already in use") from None
        except SandboxError as exc:
            raise LaunchError(str(exc)) from None
        self._started_sandbox = True
        self.sandbox_alive = {p: True for p in self.sandbox.part_names}

    def _migrate(self) -> None:
        if not self.o.migrate:
            return
        log = self.log_dir / "migrate.log"
        proc = procs.spawn(migrate_cmd(python=self.exe["python"]), log, cwd=REPO_ROOT,
                           env=self._site_env(), die_with_parent=True)
        try:
            while proc.poll() is None:
                self._check_interrupted()
                time.sleep(0.05)
        except BaseException:
            procs.stop_groups([(proc.pid, None)], self.o.grace, [proc])
            raise
        if proc.returncode != 0:
            raise LaunchError(f"manage.py migrate failed (status {proc.returncode}):\n"
                              f"{procs.tail(log)}")

    def _start_parts(self, names: list[str], timeout: float = 60.0) -> None:
        env = self._site_env()
        for name in names:
            part = self.parts[name]
            part.proc = procs.spawn(part.argv, part.log, cwd=REPO_ROOT, env=env,
                                    die_with_parent=True)
            part.ticks = procs.start_ticks(part.proc.pid)
        deadline = time.monotonic() + timeout
        pending = list(names)
        first_seen = time.monotonic()
        while pending:
            self._check_interrupted()
            for name in list(pending):
                part = self.parts[name]
                if part.proc.poll() is not None:
                    raise LaunchError(f"{name} exited (status {part.proc.returncode}) while "
                                      f"starting; last lines of {part.log}:\n{procs.tail(part.log)}")
                if part.probe is None:
                    ok = time.monotonic() - first_seen > 1.0
                    why = "starting"
                else:
                    status, why = procs.http_status(procs.connect_host(part.host), part.port,
                                                    part.probe, timeout=2.0)
                    ok = status is not None
                    if ok and status >= 500:
                        self._say(f"warning: {name} answers {part.probe} with {status}; "
                                  f"see {part.log}")
                if ok:
                    part.alive, part.detail = True, f"pid {part.proc.pid}"
                    pending.remove(name)
                elif time.monotonic() > deadline:
                    raise LaunchError(f"{name} did not answer on port {part.port} within "
                                      f"{timeout:g}s ({why}); last lines of {part.log}:\n"
                                      f"{procs.tail(part.log)}")
            time.sleep(0.1)

    def _wait_routable(self, timeout: float = 20.0) -> None:
        """Wait until the proxy routes (its health checks found a backend), so the first
        request a learner sends is not a 503; a warning, not an error, if it takes long."""
        urls = [self.sandbox.proxy_url] + ([self.url] if self.o.front_door else [])
        for url in urls:
            host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
            deadline = time.monotonic() + timeout
            status, why = None, ""
            while time.monotonic() < deadline:
                self._check_interrupted()
                status, why = procs.http_status(host.strip("[]"), int(port), "/", timeout=2.0)
                if status is not None and status not in (502, 503, 504):
                    break
                time.sleep(0.1)
            else:
                self._say(f"warning: {url}/ still answers {status or why} after {timeout:g}s; "
                          "see the proxy's /state and the logs")

    def _check_interrupted(self) -> None:
        if self._stop.is_set():
            raise Interrupted()

    # -- report ----------------------------------------------------------------------------

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(part, port, pid, state, url) for every part."""
        rows = []
        sb = self.sandbox
        for name, part in self.parts.items():
            pid = str(part.proc.pid) if part.proc else "-"
            label = {"site": "site (daphne)", "web": "web (gunicorn)", "ws": "ws (daphne)",
                     "bridge": "bridge"}.get(name, name)
            rows.append((label, str(part.port or "-"), pid,
                         "up" if part.alive else "DOWN", part.url))
        if sb is not None:
            for listener, url in sb.listeners.items():
                label = "proxy" if url == sb.proxy_url else f"proxy {listener}"
                rows.append((label, url.rsplit(":", 1)[1], str(sb.pids.get("proxy", "-")),
                             "up" if self.sandbox_alive.get("proxy") else "DOWN", url + "/"))
            rows.append(("admin API", str(sb.ports["admin"]), str(sb.pids.get("proxy", "-")),
                         "up" if self.sandbox_alive.get("proxy") else "DOWN",
                         sb.admin_url + "/state"))
            for name, url in sb.backends.items():
                rows.append((f"backend {name}", str(sb.ports[name]), str(sb.pids.get(name, "-")),
                             "up" if self.sandbox_alive.get(name) else "DOWN", url + "/"))
        if self.bridge_mode == "embedded":
            rows.append(("bridge", "-", "-", "in site", "runs inside the site (no REDIS_URL)"))
        return rows

    def table(self) -> str:
        header = ("part", "port", "pid", "state", "url")
        rows = [header, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                         for r in rows)

    def write_status(self) -> None:
        sb = self.sandbox
        data = {
            "pid": os.getpid(), "pid_start": procs.start_ticks(os.getpid()),
            "url": self.url, "sandbox": self.o.sandbox,
            "front_door": self.o.front_door, "bridge": self.bridge_mode,
            "updated_at": time.time(),
            "parts": {name: {"port": p.port, "pid": p.proc.pid if p.proc else None,
                             "pid_start": p.ticks, "alive": p.alive, "detail": p.detail, "log": str(p.log),
                             "url": p.url}
                      for name, p in self.parts.items()},
        }
        if sb is not None:
            for name in sb.part_names:
                data["parts"][name] = {
                    "port": sb.ports.get(name), "pid": sb.pids.get(name),
                    "pid_start": sb.pid_starts.get(name),
                    "alive": self.sandbox_alive.get(name, False),
                    "detail": "" if self.sandbox_alive.get(name) else "stopped",
                    "log": str(sb.log_path(name)),
                    "url": sb.proxy_url if name == "proxy" else sb.backends[name]}
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.status_path)

    # -- supervise -------------------------------------------------------------------------

    def poll(self) -> list[str]:
        """Check every part once; returns (and records) what changed."""
        changes = []
        for name, part in self.parts.items():
            if part.proc is None:
                continue
            alive = part.proc.poll() is None
            if part.alive and not alive:
                part.detail = f"exited with status {part.proc.returncode}"
                changes.append(f"{name} (port {part.port or '-'}) stopped: pid {part.proc.pid} "
                               f"{part.detail}; last lines of {part.log}:\n"
                               f"{procs.tail(part.log, 5)}")
            part.alive = alive
        if self.sandbox is not None:
            self.service._reap()
            try:
                sb = self.service.get(self.o.sandbox)
            except SandboxError:
                sb = None
                if any(self.sandbox_alive.values()):
                    changes.append(f"sandbox {self.o.sandbox} was stopped by someone else")
                self.sandbox_alive = {p: False for p in self.sandbox_alive}
            if sb is not None:
                for name in sb.part_names:
                    alive = sb.alive(name)
                    was = self.sandbox_alive.get(name, False)
                    port = sb.ports["proxy" if name == "proxy" else name]
                    if was and not alive:
                        changes.append(f"{name} (port {port}) stopped: pid {sb.pids.get(name)} "
                                       f"is gone; log: {sb.log_path(name)}")
                    elif alive and not was:
                        changes.append(f"{name} (port {port}) is running again "
                                       f"(pid {sb.pids.get(name)})")
                    self.sandbox_alive[name] = alive
                self.sandbox = sb
        if changes:
            for change in changes:
                self._say(f"[lab] {change}")
            self.write_status()
        return changes

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def stop(self) -> None:
        """Stop the site and bridge, then the sandbox; no process is left behind."""
        launched = [p for p in self.parts.values() if p.proc is not None]
        procs.stop_groups([(p.proc.pid, p.ticks) for p in launched], self.o.grace,
                          [p.proc for p in launched])
        for p in launched:
            p.alive = False
        if self._started_sandbox:
            try:
                self.service.stop(self.o.sandbox, grace=self.o.grace, keep_logs=True)
            except SandboxError:
                pass  # already gone (stopped from elsewhere): nothing left to stop
            self._started_sandbox = False
        # Then everything the site started: lab runs, traffic, learners' sandboxes, Redis.
        stopped = cleanup.stop_everything(self.state_dir, self.o.grace, self._say)
        if stopped:
            self._say(f"stopped what the site had started: {', '.join(stopped)}")
        self.status_path.unlink(missing_ok=True)

    def clean_leftovers(self) -> None:
        """A previous launcher of this state dir died without stopping its processes:
        stop them now (by recorded pid and start time), before checking ports."""
        stopped = cleanup.leftovers(self.state_dir, self.status_path, self.o.grace, self._say)
        if stopped:
            self._say(f"an earlier run did not stop cleanly; stopped what it left: "
                      f"{', '.join(stopped)}")

    def run(self, install_signals: bool = True,
            on_ready: Callable[["Launcher"], None] | None = None) -> int:
        """Start, supervise until a signal, stop. Returns the exit status."""
        self.clean_leftovers()
        self.check_ports()  # before anything starts: a refusal leaves nothing to stop
        previous = {}
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[sig] = signal.signal(sig, self.request_stop)
        try:
            try:
                self.start()
            except Interrupted:
                self._say("interrupted while starting; stopping what was started")
                return 130
            if on_ready:
                on_ready(self)
            while not self._stop.wait(0.5):
                self.poll()
            self._say("stopping the lab...")
            return 0
        finally:
            self.stop()
            self._say("stopped.")
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def read_status(state_dir: str | Path | None = None, sandbox: str = "default") -> dict | None:
    """What the launcher last recorded about its parts (None when no launcher runs)."""
    path = Path(state_dir or default_state_dir()) / "launcher" / f"{sandbox}.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not procs.pid_alive(data.get("pid")):
        return None
    return data


# ---------------------------------------------------------------- command line

def add_arguments(parser) -> None:
    """The options of ``manage.py lab`` (and ``python -m labs.sandbox.launcher``)."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address every part listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000,
                        help="the site (with --front-door: the front proxy) (default 8000)")
    parser.add_argument("--proxy-port", type=int, default=8080,
                        help="the proxy listener in front of the toy backends (default 8080)")
    parser.add_argument("--admin-port", type=int, default=9900,
                        help="the proxy's admin API, on loopback (default 9900)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--backend-ports", metavar="RANGE",
                       help="toy backend ports, e.g. 9001-9004 or 9001,9002 (default 9001-9004)")
    group.add_argument("--backends", type=int, metavar="N",
                       help="number of toy backends, on ports 9001.. (default 4)")
    parser.add_argument("--sandbox", default="default", help="sandbox id (default 'default')")
    parser.add_argument("--front-door", action="store_true",
                        help="put LBLab's own proxy in front of the site too, as compose.yml "
                             "does: gunicorn for pages, daphne for /ws/")
    parser.add_argument("--web-port", type=int, help="--front-door: gunicorn (default port+1)")
    parser.add_argument("--ws-port", type=int, help="--front-door: daphne (default port+2)")
    parser.add_argument("--bridge", choices=["auto", "process", "embedded"], default="auto",
                        help="run the bridge as its own process (needs REDIS_URL) or inside the "
                             "site; auto: a process when REDIS_URL is set")
    parser.add_argument("--state-dir", help="where sandboxes and logs live "
                                            "(default $LBLAB_STATE_DIR or ./var)")
    parser.add_argument("--no-migrate", action="store_true", help="skip manage.py migrate")
    parser.add_argument("--public", action="store_true",
                        help="host a cohort: DEBUG off, the shared sandbox read-only to "
                             "visitors, rate limits, the site's own error pages (see "
                             "lblab/settings.py; compose.yml runs this way)")
    parser.add_argument("--behind-tls", action="store_true",
                        help="--public, served over HTTPS by a TLS terminator that sets "
                             "X-Forwarded-Proto: secure cookies, HSTS, HTTP redirected")


def options_from(args) -> LabOptions:
    """LabOptions from parsed arguments (an argparse Namespace or the dict Django passes)."""
    get = args.get if isinstance(args, dict) else lambda k: getattr(args, k, None)
    backend_ports = parse_port_range(get("backend_ports")) if get("backend_ports") else None
    backends = len(backend_ports) if backend_ports else (get("backends") or 4)
    if not 1 <= backends <= 64:
        raise LaunchError(f"--backends {backends}: give 1 to 64")
    return LabOptions(
        host=get("host"), port=get("port"), proxy_port=get("proxy_port"),
        admin_port=get("admin_port"), backend_ports=backend_ports, backends=backends,
        sandbox=get("sandbox"), front_door=bool(get("front_door")), web_port=get("web_port"),
        ws_port=get("ws_port"), bridge=get("bridge"), state_dir=get("state_dir"),
        migrate=not get("no_migrate"), public=bool(get("public")),
        behind_tls=bool(get("behind_tls")),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m labs.sandbox.launcher``: the same as ``manage.py lab``, without Django."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m labs.sandbox.launcher",
                                     description="Start LBLab locally (same as manage.py lab).")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return Launcher(options_from(args)).run()
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
