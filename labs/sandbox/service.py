"""Sandboxes: one proxy plus its toy backends on their own ports, with an id.

Theory of operation
-------------------
The service keeps no state in memory that matters: each sandbox is one JSON file,
``<state_dir>/sandboxes/<id>.json`` (ids, URLs, ports, pids, the config path, times), next to
a directory ``<state_dir>/sandboxes/<id>/`` with its proxy config and one log per part.
So any process can look at, touch, restart a part of, or stop any sandbox: the launcher
creates the default one, the site reads it (and may restart a backend of it), a reaper in
yet another process stops idle ones. Changes are read-modify-write under an ``flock`` on
``<state_dir>/sandboxes/.lock`` and files are replaced atomically, so concurrent services
neither lose updates nor hand out the same port twice.

Creating a sandbox: reserve (under the lock: the cap, the id, ports no other sandbox has
recorded and that nothing listens on), write the proxy config (a template with this
sandbox's addresses put in, checked by the proxy's own validator), start every part at once
(the backends forked from one preloaded parent, ``python -m labs.backend --preload``, so
they share the code they import; ``python -m proxy``; each part in its own process group, see
procs.py), then wait until each answers: a backend's ``GET /health/live`` is 200, the
proxy's admin ``GET /healthz`` is 200 and its main listener accepts connections. A part
that exits or stays silent fails the whole creation with an error naming that part and the
tail of its log; whatever was started is stopped again.

Parts are identified by pid plus the kernel's start time of that pid, so a recorded pid that
was reused by an unrelated process is never signalled, and reported as not running.

Memory: a toy backend is mostly the code it imports (asyncio, ssl, uvloop, its modules).
Forked from a parent that imported it once (labs/backend/preload.py, like ``gunicorn
--preload``), the backends share those pages copy-on-write instead of each holding its own
copy: the sandbox's goal is under 100 MB (PSS) for 4 backends, bench/sandbox_memory.py
measures it. Each backend is still its own process and process group, stopped, killed and
restarted alone; the parent only reaps them, passes SIGTERM on, and exits once they are all
gone. It is recorded (``preload_pid``) so measure() counts it and stop() can end it. A
backend restarted later is started on its own (``python -m labs.backend``).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import yaml

from labs.problems import Problem
from labs.sandbox import procs, topology
from labs.sandbox import limits as os_limits
from labs.sandbox.limits import Limits
from labs.sandbox.commands import (
    REPO_ROOT,
    backend_args,
    backend_cmd,
    preloaded_backends_cmd,
    proxy_cmd,
)

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
DEFAULT_PORT_RANGE = (20000, 29999)  # below Linux's ephemeral range (32768-60999)
_BIND_FAILED = re.compile(r"address already in use|errno 98", re.IGNORECASE)


def env_port_range() -> tuple[int, int]:
    """LBLAB_SANDBOX_PORTS ("20000-29999"), the setting lblab/settings.py documents."""
    raw = os.environ.get("LBLAB_SANDBOX_PORTS", "").strip()
    if not raw:
        return DEFAULT_PORT_RANGE
    try:
        lo, hi = (int(x) for x in raw.split("-", 1))
    except ValueError:
        lo = hi = -1
    if not 1024 <= lo < hi <= 65535:
        raise SandboxError(f"LBLAB_SANDBOX_PORTS={raw!r}: write a range such as 20000-29999")
    return lo, hi


def default_state_dir() -> Path:
    return Path(os.environ.get("LBLAB_STATE_DIR") or REPO_ROOT / "var")


# ---------------------------------------------------------------- errors

class SandboxError(Problem):
    """Something a caller can fix; the message says what."""

    status = 400


class SandboxNotFound(SandboxError, LookupError):
    status = 404


class SandboxExists(SandboxError):
    status = 409


class SandboxLimit(SandboxError):
    status = 503


class PortInUse(SandboxError):
    def __init__(self, part: str, port: int, message: str | None = None):
        self.part, self.port = part, port
        super().__init__(message or f"port {port} ({part}) is already in use")


class SandboxStartError(SandboxError):
    """A part did not come up: ``part`` names it, ``log_tail`` is the end of its log."""

    def __init__(self, sandbox_id: str, part: str, reason: str, log_path: Path | None,
                 also: Path | None = None):
        self.sandbox_id, self.part, self.reason = sandbox_id, part, reason
        self.log_path = log_path
        self.log_tail = procs.tail(log_path) if log_path else ""
        where = "".join(f"\n--- last lines of {path} ---\n{procs.tail(path)}"
                        for path in (log_path, also) if path)
        super().__init__(f"sandbox {sandbox_id}: {part} did not come up: {reason}{where}")


# ---------------------------------------------------------------- the record

@dataclass
class Sandbox:
    id: str
    host: str
    proxy_url: str
    admin_url: str
    backends: dict[str, str]  # name -> http://host:port
    ports: dict[str, int]  # part -> port: proxy, admin, b1.., listener.NAME
    pids: dict[str, int] = field(default_factory=dict)  # part -> pid (proxy, b1..)
    pid_starts: dict[str, int] = field(default_factory=dict)  # part -> kernel start ticks
    listeners: dict[str, str] = field(default_factory=dict)  # proxy listener -> URL
    config_path: str = ""
    log_dir: str = ""
    created_at: float = 0.0
    last_used: float = 0.0
    status: str = "starting"  # starting | running
    pinned: bool = False  # never reaped for idleness (the launcher's own sandbox)
    start_seconds: float | None = None  # from spawn to every part answering
    redis_url: str | None = None
    inner_host: str = "127.0.0.1"  # where the admin API and toy backends listen
    # The parent the backends were forked from (labs/backend/preload.py), not a part.
    preload_pid: int | None = None
    preload_start: int | None = None
    # Who may use it: a learner key (labs.services.sandboxes), "" for the operator's own.
    owner: str = ""
    # A sandbox with several balancers (an HA pair, proxies that share a pool): the ones
    # beyond the first, name -> {"proxy_url", "admin_url", "listeners", "config_path"};
    # their ports are in ``ports`` as "NAME/proxy", "NAME/admin", "NAME/listener.L". The
    # first proxy is always the part "proxy", so a one-proxy sandbox is unchanged.
    proxies: dict[str, dict] = field(default_factory=dict)
    # Ports reserved for no part at start: a floating address that one proxy at a time
    # binds (a VIP). Name -> port, also in ``ports`` as "floating/NAME".
    floating: dict[str, int] = field(default_factory=dict)

    @property
    def part_names(self) -> list[str]:
        return ["proxy", *self.proxies, *self.backends]

    def is_proxy(self, part: str) -> bool:
        return part == "proxy" or part in self.proxies

    def proxy_ports(self, part: str = "proxy") -> dict[str, int]:
        """One proxy's ports under the plain keys (proxy, admin, listener.L)."""
        if part == "proxy":
            return {k: v for k, v in self.ports.items()
                    if k in ("proxy", "admin") or k.startswith("listener.")}
        prefix = f"{part}/"
        return {k[len(prefix):]: v for k, v in self.ports.items() if k.startswith(prefix)}

    def admin_url_of(self, part: str = "proxy") -> str:
        return self.admin_url if part == "proxy" else self.proxies[part]["admin_url"]

    def proxy_url_of(self, part: str = "proxy") -> str:
        return self.proxy_url if part == "proxy" else self.proxies[part]["proxy_url"]

    def config_path_of(self, part: str = "proxy") -> str:
        return self.config_path if part == "proxy" else self.proxies[part]["config_path"]

    def log_path(self, part: str) -> Path:
        return Path(self.log_dir) / f"{part}.log"

    def alive(self, part: str) -> bool:
        return procs.pid_alive(self.pids.get(part), self.pid_starts.get(part))

    def measure(self, kind: str = "rss") -> dict[str, int]:
        """Resident memory in bytes per part (with its child processes) and "total".

        ``kind="pss"`` counts shared pages (interpreter, libraries) once across processes:
        the sandbox's real cost; plain RSS counts them in every process. The parent the
        backends were forked from costs memory too: its own is split evenly over the
        backends it still runs, so "total" is every process of the sandbox."""
        out = {part: (procs.tree_rss_bytes(self.pids[part], kind) if self.alive(part) else 0)
               for part in self.part_names if part in self.pids}
        if procs.pid_alive(self.preload_pid, self.preload_start):
            own = (procs.pss_bytes if kind == "pss" else procs.rss_bytes)(self.preload_pid)
            forked = [b for b in self.backends if out.get(b)
                      and procs.parent_of(self.pids[b]) == self.preload_pid]
            shares = forked or list(out)
            if shares:
                each, extra = divmod(own, len(shares))
                for i, part in enumerate(shares):
                    out[part] += each + (extra if i == 0 else 0)
        out["total"] = sum(out.values())
        return out

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Sandbox":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------- the service

class SandboxService:
    name = "processes"  # its name among the drivers (drivers.py)

    def __init__(self, state_dir: str | Path | None = None, host: str = "127.0.0.1",
                 max_sandboxes: int = 40, *, port_range: tuple[int, int] | None = None,
                 start_timeout: float = 20.0, die_with_parent: bool = False,
                 python: str = sys.executable, preload_backends: bool = True,
                 limits: "Limits | None" = None):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.dir = self.state_dir / "sandboxes"
        self.host = host
        # Only the proxy's listeners face the network when ``host`` is beyond loopback: the
        # admin API (which would need a token there) and the toy backends (whose /_control
        # anyone could use) stay on 127.0.0.1, reached through the proxy or from this machine.
        self.inner_host = host if procs.is_loopback(host) else "127.0.0.1"
        self.max_sandboxes = max_sandboxes
        self.port_range = port_range or env_port_range()
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.python = python
        # Fork a sandbox's backends from one preloaded parent (see the module docstring);
        # False: one ``python -m labs.backend`` each.
        self.preload_backends = preload_backends
        # OS limits for every process of every sandbox this service starts (limits.py).
        self.limits = limits
        self._popens: dict[tuple[str, str], subprocess.Popen] = {}

    # -- files ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _path(self, sandbox_id: str) -> Path:
        return self.dir / f"{sandbox_id}.json"

    def _read(self, sandbox_id: str) -> Sandbox | None:
        try:
            data = json.loads(self._path(sandbox_id).read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, TypeError) as exc:
            raise SandboxError(f"sandbox state file {self._path(sandbox_id)} is damaged ({exc}): "
                               "delete it (its processes, if any, must be stopped by hand)")
        return Sandbox.from_json(data)

    def _write(self, sb: Sandbox) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{sb.id}.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(sb.to_json(), indent=2, sort_keys=True))
        os.replace(tmp, self._path(sb.id))

    def _all(self) -> list[Sandbox]:
        if not self.dir.exists():
            return []
        out = []
        for path in self.dir.glob("*.json"):
            sb = self._read(path.stem)
            if sb is not None:
                out.append(sb)
        return sorted(out, key=lambda s: (s.created_at, s.id))

    def _update(self, sandbox_id: str, **changes) -> Sandbox:
        with self._lock():
            sb = self.get(sandbox_id)
            for key, value in changes.items():
                setattr(sb, key, value)
            self._write(sb)
            return sb

    # -- queries -------------------------------------------------------------------------

    def get(self, sandbox_id: str) -> Sandbox:
        sb = self._read(sandbox_id) if ID_RE.match(sandbox_id or "") else None
        if sb is None:
            # Never list the others: their ids are other learners' (the CLI's `list` shows them).
            raise SandboxNotFound(f"no sandbox named {sandbox_id!r} is running")
        return sb

    def list(self) -> list[Sandbox]:
        return self._all()

    def parts(self, sandbox_id: str) -> dict[str, dict]:
        """{part: {"alive": bool, "detail": str}}: the process runs *and* answers."""
        sb = self.get(sandbox_id)
        self._reap()
        with ThreadPoolExecutor(max_workers=len(sb.part_names)) as pool:
            results = pool.map(lambda part: (part, self._probe(sb, part)), sb.part_names)
            return {part: {"alive": ok, "detail": detail} for part, (ok, detail) in results}

    def _probe(self, sb: Sandbox, part: str, timeout: float = 1.0) -> tuple[bool, str]:
        pid = sb.pids.get(part)
        if not sb.alive(part):
            state = f"pid {pid} is gone" if pid else "never started"
            return False, f"not running ({state}); log: {sb.log_path(part)}"
        if sb.is_proxy(part):
            ports, admin_url, proxy_url = (sb.proxy_ports(part), sb.admin_url_of(part),
                                           sb.proxy_url_of(part))
            status, why = procs.http_status(procs.connect_host(sb.inner_host), ports["admin"],
                                            "/healthz", timeout)
            if status != 200:
                return False, (f"pid {pid} runs but the admin API at {admin_url} does not "
                               f"answer /healthz ({status or why})")
            # The listener is looked at, never connected to: a connection would be traffic
            # the learner's proxy records (an L4 connection on their dashboard, every few
            # seconds, and a graded run would take it for its traffic's start). Its port
            # cannot be bound while it listens. A UDP main listener (udp://) has no listen
            # state; the admin API answering is what the proxy can show.
            if not proxy_url.startswith("udp://") and procs.port_free(sb.host, ports["proxy"]):
                return False, f"pid {pid} runs but nothing listens on {proxy_url}"
            return True, f"pid {pid}, listening on {proxy_url}, admin {admin_url}"
        # The backend's HTTP face: its main port, or its control port when a lab runs it in
        # a mode whose main port speaks gRPC or UDP (labs/framework/services.py).
        port = urlsplit(sb.backends[part]).port or sb.ports[part]
        status, why = procs.http_status(procs.connect_host(sb.inner_host), port,
                                        "/health/live", timeout)
        if status != 200:
            return False, (f"pid {pid} runs but GET {sb.backends[part]}/health/live gave "
                           f"{status or why}")
        return True, f"pid {pid}, answering on {sb.backends[part]}"

    # -- create --------------------------------------------------------------------------

    def create(self, sandbox_id: str | None = None, backends: int | list[str] = 4,
               config: dict | None = None, ports: dict | None = None, wait: bool = True, *,
               pinned: bool = False, timeout: float | None = None,
               redis_url: str | None = None, owner: str = "",
               extra_proxies: list[str] = (), floating: list[str] = ()) -> Sandbox:
        """Start a sandbox and (with ``wait``) return once every part answers.

        ``backends``: how many toy backends (named b1..bN), or their names.
        ``config``: a proxy config (mapping in the proxy's YAML shape); default: the default
        topology (proxy/examples/default.yaml) over these backends. Only addresses are
        rewritten (topology.place): main listener, admin, and pool backends named like ours.
        ``ports``: any of {"proxy", "admin", "b1".., "listener.NAME"} -> port; the rest are
        allocated. Raises SandboxExists, SandboxLimit, PortInUse, SandboxStartError.
        ``extra_proxies``: names of more proxies beside the first (part "proxy"), each with
        the same config over the same backends and ports of its own (Sandbox.proxies).
        ``floating``: names of ports to reserve for a floating address (Sandbox.floating).
        """
        sandbox_id = sandbox_id or f"sb-{secrets.token_hex(4)}"
        if not ID_RE.match(sandbox_id):
            raise SandboxError(f"sandbox id {sandbox_id!r}: use 1-40 letters, digits, '-' or '_'")
        names = ([f"b{i}" for i in range(1, backends + 1)] if isinstance(backends, int)
                 else list(backends))
        if not names or len(names) > 64 or len(set(names)) != len(names):
            raise SandboxError(f"backends: give 1-64 distinct names or a count, got {backends!r}")
        for name in names:
            if name in ("proxy", "admin") or not ID_RE.match(name):
                raise SandboxError(f"backend name {name!r} is not allowed")
        extra_proxies, floating = list(extra_proxies), list(floating)
        for name in [*extra_proxies, *floating]:
            if name in ("proxy", "admin", *names) or not ID_RE.match(name) \
                    or [*extra_proxies, *floating].count(name) > 1:
                raise SandboxError(f"proxy or floating address name {name!r} is not allowed: "
                                   "give each a name of its own, not a backend's")
        template = config if config is not None else topology.default_config(names)
        if not isinstance(template, dict) or not template.get("listeners"):
            raise SandboxError("config: give a proxy config mapping with listeners (see "
                               "proxy/examples/default.yaml)")
        keys = ["proxy", "admin", *names]
        listener_keys = [k for k in topology.listener_port_keys(template, names).values()
                         if k != "proxy"]
        keys += listener_keys
        for extra in extra_proxies:
            keys += [f"{extra}/{k}" for k in ("proxy", "admin", *listener_keys)]
        keys += [f"floating/{name}" for name in floating]
        unknown = set(ports or {}) - set(keys)
        if unknown:
            raise SandboxError(f"ports: unknown part(s) {', '.join(sorted(unknown))}; "
                               f"parts are {', '.join(keys)}")

        given = set(ports or {})
        proxy_keys = {k for k in keys if k not in names}
        for attempt in range(3):
            try:
                return self._create_once(sandbox_id, names, template, keys, dict(ports or {}),
                                         wait, pinned, timeout, redis_url, owner)
            except SandboxStartError as exc:
                # Another process (not a sandbox of this state dir) may have taken an
                # allocated port between our check and the part's bind: try other ports.
                own = proxy_keys if exc.part == "proxy" else {exc.part}
                if attempt == 2 or own & given or not _BIND_FAILED.search(exc.log_tail):
                    raise
        raise AssertionError("unreachable")

    def _create_once(self, sandbox_id: str, names: list[str], template: dict, keys: list[str],
                     ports: dict, wait: bool, pinned: bool, timeout: float | None,
                     redis_url: str | None, owner: str = "") -> Sandbox:
        with self._lock():
            existing = self._read(sandbox_id)
            if existing is not None:
                if any(existing.alive(p) for p in existing.part_names) or (
                        existing.status == "starting" and time.time() - existing.created_at < 60):
                    raise SandboxExists(f"sandbox {sandbox_id!r} is already running "
                                        f"(proxy {existing.proxy_url}); stop it first or pick "
                                        "another id")
                # A stale record (its processes are gone): forget it; we hold the lock.
                self._path(sandbox_id).unlink(missing_ok=True)
            others = [s for s in self._all() if s.id != sandbox_id]
            live = [s for s in others if s.status == "starting"
                    or any(s.alive(p) for p in s.part_names)]
            if len(live) >= self.max_sandboxes:
                raise SandboxLimit(
                    f"{len(live)} sandboxes are running, the most this service allows "
                    f"(max_sandboxes={self.max_sandboxes}): stop one, let idle ones be reaped, "
                    "or raise the limit")
            chosen = self._allocate(keys, ports, {p for s in others for p in s.ports.values()})
            own = {k: v for k, v in chosen.items() if "/" not in k}
            placed = topology.place(template, self.host, own, inner_host=self.inner_host)
            problems = topology.validate(placed)
            if problems:
                raise SandboxError("the proxy refuses this config:\n  " + "\n  ".join(problems))
            sb = self._record(sandbox_id, names, chosen, placed, pinned, redis_url)
            sb.owner = owner
            for key in keys:  # "NAME/proxy": one more proxy; "floating/NAME": a floating port
                owner_part, _, what = key.partition("/")
                if what == "proxy" and owner_part != "floating":
                    sb.proxies[owner_part] = self._record_extra_proxy(sb, owner_part, names,
                                                                      template)
                elif owner_part == "floating":
                    sb.floating[what] = chosen[key]
            self._write(sb)
        try:
            started = time.monotonic()
            self._start(sb, names)
            if wait:
                self._wait_ready(sb, sb.part_names, timeout or self.start_timeout)
                sb.start_seconds = round(time.monotonic() - started, 3)
            return self._update(sb.id, status="running", start_seconds=sb.start_seconds)
        except BaseException:
            self._remove(sb, keep_logs=True)
            raise

    def _record(self, sandbox_id: str, names: list[str], ports: dict[str, int], placed: dict,
                pinned: bool, redis_url: str | None) -> Sandbox:
        host = procs.url_host(self.host)
        sandbox_dir = self.dir / sandbox_id
        sandbox_dir.mkdir(parents=True, exist_ok=True)
        config_path = sandbox_dir / "proxy.yaml"
        config_path.write_text(f"# sandbox {sandbox_id}, written by labs.sandbox\n"
                               + yaml.safe_dump(placed, sort_keys=False))
        keys = topology.listener_port_keys(placed, names)
        now = time.time()
        scheme = {name: "udp" if (listener or {}).get("protocol") == "udp" else "http"
                  for name, listener in (placed.get("listeners") or {}).items()}
        main = next((name for name, key in keys.items() if key == "proxy"), None)
        return Sandbox(
            id=sandbox_id, host=self.host,
            proxy_url=f"{scheme.get(main, 'http')}://{host}:{ports['proxy']}",
            admin_url=f"http://{procs.url_host(self.inner_host)}:{ports['admin']}",
            backends={n: f"http://{procs.url_host(self.inner_host)}:{ports[n]}" for n in names},
            listeners={name: f"{scheme[name]}://{host}:{ports[key]}"
                       for name, key in keys.items()},
            ports=ports, config_path=str(config_path), log_dir=str(sandbox_dir),
            created_at=now, last_used=now, pinned=pinned, redis_url=redis_url,
            inner_host=self.inner_host,
        )

    def _record_extra_proxy(self, sb: Sandbox, part: str, names: list[str],
                            template: dict) -> dict:
        """Place and write the config of one more proxy (same template, its own ports)."""
        ports = {**sb.proxy_ports(part), **{n: sb.ports[n] for n in names}}
        placed = topology.place(template, self.host, ports, inner_host=self.inner_host)
        config_path = Path(sb.log_dir) / f"{part}.yaml"
        config_path.write_text(f"# sandbox {sb.id}, proxy {part}, written by labs.sandbox\n"
                               + yaml.safe_dump(placed, sort_keys=False))
        host = procs.url_host(self.host)
        keys = topology.listener_port_keys(placed, names)
        scheme = {name: "udp" if (listener or {}).get("protocol") == "udp" else "http"
                  for name, listener in (placed.get("listeners") or {}).items()}
        main = next((name for name, key in keys.items() if key == "proxy"), None)
        return {"proxy_url": f"{scheme.get(main, 'http')}://{host}:{ports['proxy']}",
                "admin_url": f"http://{procs.url_host(self.inner_host)}:{ports['admin']}",
                "listeners": {name: f"{scheme[name]}://{host}:{ports[key]}"
                              for name, key in keys.items()},
                "config_path": str(config_path)}

    def _allocate(self, keys: list[str], given: dict[str, int], reserved: set[int]) -> dict:
        taken: set[int] = set()
        for key, port in given.items():
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise SandboxError(f"ports.{key}: {port!r} is not a TCP port (1-65535)")
            if port in taken:
                raise SandboxError(f"port {port} is given to two parts; give each its own")
            if port in reserved or not procs.port_free(self.host, port):
                raise PortInUse(key, port)
            if key != "proxy" and not key.startswith("listener.") and \
                    not procs.port_free(self.inner_host, port):
                raise PortInUse(key, port)
            taken.add(port)
        out = {}
        lo, hi = self.port_range
        candidates = random.Random().sample(range(lo, hi + 1), k=hi - lo + 1)
        it = iter(candidates)
        for key in keys:
            if key in given:
                out[key] = given[key]
                continue
            for port in it:
                if port not in taken and port not in reserved and procs.port_free(self.host, port):
                    out[key] = port
                    taken.add(port)
                    break
            else:
                raise SandboxError(f"no free port left in {lo}-{hi} for {key}")
        return out

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH"))
                                            if p)
        return env

    def _spawn(self, sb: Sandbox, part: str) -> None:
        if sb.is_proxy(part):
            argv = proxy_cmd(sb.config_path_of(part), python=self.python)
        else:
            argv = backend_cmd(part, sb.ports[part], sb.inner_host, sb.redis_url, python=self.python)
        proc = procs.spawn(argv, sb.log_path(part), cwd=REPO_ROOT, env=self._env(),
                           die_with_parent=self.die_with_parent)
        self._popens[(sb.id, part)] = proc
        self._bound(sb, proc.pid)
        sb.pids[part] = proc.pid
        sb.pid_starts[part] = procs.start_ticks(proc.pid)

    def _spawn_preloaded(self, sb: Sandbox, names: list[str]) -> subprocess.Popen:
        """Start the parent that forks ``names`` (labs/backend/preload.py)."""
        argv = preloaded_backends_cmd(
            [(sb.log_path(n), backend_args(n, sb.ports[n], sb.inner_host, sb.redis_url))
             for n in names], die_with_parent=self.die_with_parent, python=self.python)
        proc = procs.spawn(argv, sb.log_path("preload"), cwd=REPO_ROOT, env=self._env(),
                           die_with_parent=self.die_with_parent, stdout_pipe=True)
        self._popens[(sb.id, "preload")] = proc
        self._bound(sb, proc.pid)  # before it forks: the backends inherit the limits
        sb.preload_pid, sb.preload_start = proc.pid, procs.start_ticks(proc.pid)
        return proc

    def _bound(self, sb: Sandbox, pid: int) -> None:
        if self.limits is not None:
            self.limits.apply(pid, sb.id)

    def _read_preloaded(self, sb: Sandbox, names: list[str], proc: subprocess.Popen) -> None:
        """Record the pids of the forked backends, which the parent prints once forked."""
        try:
            line = procs.read_line(proc, self.start_timeout)
        finally:
            proc.stdout.close()
        try:
            pids = json.loads(line)["pids"] if line else None
        except (ValueError, TypeError, KeyError):
            pids = None
        if not isinstance(pids, list) or len(pids) != len(names):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)  # it closed stdout: usually it is exiting
            status = (f"exited (status {proc.returncode})" if proc.returncode is not None
                      else f"gave no pids within {self.start_timeout:g}s (got {line!r})")
            # None of the backends came up: name the first, as a timeout does.
            raise SandboxStartError(
                sb.id, names[0], f"the process the backends are forked from (pid {proc.pid}) "
                f"{status}", sb.log_path("preload"))
        for name, pid in zip(names, pids):
            sb.pids[name], sb.pid_starts[name] = pid, procs.start_ticks(pid)

    def _start(self, sb: Sandbox, names: list[str]) -> None:
        # Backends first: the proxy's first probes find them.
        if self.preload_backends:
            preloaded = self._spawn_preloaded(sb, names)
            for part in ["proxy", *sb.proxies]:
                self._spawn(sb, part)  # starts while the backends' parent imports
            self._read_preloaded(sb, names, preloaded)
        else:
            for part in [*names, "proxy", *sb.proxies]:
                self._spawn(sb, part)
        with self._lock():
            current = self._read(sb.id)
            if current is not None:
                current.pids, current.pid_starts = sb.pids, sb.pid_starts
                current.preload_pid, current.preload_start = sb.preload_pid, sb.preload_start
                self._write(current)

    @staticmethod
    def _forked_exit(sb: Sandbox, part: str) -> str:
        """How a backend forked by the preloaded parent ended, as that parent logged it."""
        pid = sb.pids.get(part)
        try:
            lines = Path(sb.log_path("preload")).read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        ended = next((line.split(") ", 1)[-1] for line in reversed(lines)
                      if f"(pid {pid})" in line), None)
        return (f"it (pid {pid}) {ended}" if ended
                else f"it (pid {pid}) is gone; its parent logged nothing of it yet")

    def _wait_ready(self, sb: Sandbox, parts: list[str], timeout: float) -> None:
        pending = list(parts)
        last: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while pending:
            for part in list(pending):
                proc = self._popens.get((sb.id, part))
                if proc is not None and proc.poll() is not None or not sb.alive(part):
                    if proc is not None:
                        raise SandboxStartError(sb.id, part, f"it exited (status "
                                                f"{proc.returncode})", sb.log_path(part))
                    # Forked by the preloaded parent, which logs how each child ended.
                    raise SandboxStartError(sb.id, part, self._forked_exit(sb, part),
                                            sb.log_path(part), sb.log_path("preload"))
                ok, last[part] = self._probe(sb, part, timeout=0.5)
                if ok:
                    pending.remove(part)
            if not pending:
                break
            if time.monotonic() > deadline:
                part = pending[0]
                raise SandboxStartError(sb.id, part, f"not answering after {timeout:g}s: "
                                        f"{last.get(part, '')}", sb.log_path(part))
            time.sleep(0.03)

    # -- change --------------------------------------------------------------------------

    def restart_backend(self, sandbox_id: str, name: str, wait: bool = True) -> Sandbox:
        """Start toy backend ``name`` again on its port (stopping it first if it still runs)."""
        sb = self.get(sandbox_id)
        if name not in sb.backends:
            raise SandboxError(f"sandbox {sandbox_id} has no backend {name!r}; it has "
                               f"{', '.join(sb.backends)}")
        if sb.alive(name):
            procs.stop_groups([(sb.pids[name], sb.pid_starts.get(name))], grace=3.0,
                              popens=[p for k, p in self._popens.items() if k == (sb.id, name)])
        deadline = time.monotonic() + 5.0
        while not procs.port_free(sb.inner_host, sb.ports[name]):
            if time.monotonic() > deadline:
                raise PortInUse(name, sb.ports[name],
                                f"port {sb.ports[name]} of {name} is still taken by another "
                                "process; cannot start it again there")
            time.sleep(0.05)
        self._spawn(sb, name)
        with self._lock():
            current = self.get(sandbox_id)
            current.pids[name], current.pid_starts[name] = sb.pids[name], sb.pid_starts[name]
            current.last_used = time.time()
            self._write(current)
        if wait:
            self._wait_ready(current, [name], self.start_timeout)
        return current

    def restart_proxy(self, sandbox_id: str, wait: bool = True, part: str = "proxy") -> Sandbox:
        """Start a proxy again from its config file (stopping it first if it still runs):
        the first one ("proxy") or one of ``Sandbox.proxies``.

        Changes made through the admin API since the last start are lost: the file is
        what the sandbox was created with (``config_path``)."""
        sb = self.get(sandbox_id)
        if not sb.is_proxy(part):
            raise SandboxError(f"sandbox {sandbox_id} has no proxy {part!r}; it has "
                               f"{', '.join(['proxy', *sb.proxies])}")
        if sb.alive(part):
            procs.stop_groups([(sb.pids[part], sb.pid_starts.get(part))], grace=3.0,
                              popens=[p for k, p in self._popens.items() if k == (sb.id, part)])
        deadline = time.monotonic() + 5.0
        ports = sb.proxy_ports(part)
        while any(not procs.port_free(sb.inner_host if k == "admin" else sb.host, port)
                  for k, port in ports.items()):
            if time.monotonic() > deadline:
                raise PortInUse(part, ports["proxy"],
                                f"the ports of {part} are still taken by another process; "
                                "cannot start it again there")
            time.sleep(0.05)
        self._spawn(sb, part)
        with self._lock():
            current = self.get(sandbox_id)
            current.pids[part], current.pid_starts[part] = sb.pids[part], sb.pid_starts[part]
            current.last_used = time.time()
            self._write(current)
        if wait:
            self._wait_ready(current, [part], self.start_timeout)
        return current

    def kill_part(self, sandbox_id: str, part: str) -> None:
        """SIGKILL one part's process group at once (a crash: no draining, no goodbye)."""
        sb = self.get(sandbox_id)
        if part not in sb.part_names:
            raise SandboxError(f"sandbox {sandbox_id} has no part {part!r}; it has "
                               f"{', '.join(sb.part_names)}")
        procs.signal_group(sb.pids[part], signal.SIGKILL, sb.pid_starts.get(part))
        # Reap it now: a zombie still counts as running, and a restart would first wait
        # out a stop's grace period for a process that is already dead.
        for key, proc in self._popens.items():
            if key == (sb.id, part):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2.0)

    def part_states(self, sandbox_id: str) -> dict[str, tuple[int | None, bool]]:
        """{part: (pid, running)}: what a graded run's watchdog compares (watchdog.py)."""
        sb = self.get(sandbox_id)
        return {part: (sb.pids.get(part), sb.alive(part)) for part in sb.part_names}

    def measure(self, sandbox_id: str, kind: str = "rss") -> dict[str, int]:
        """Memory per part and "total", in bytes (``Sandbox.measure``)."""
        return self.get(sandbox_id).measure(kind)

    def restart_part(self, sandbox_id: str, part: str, wait: bool = True) -> Sandbox:
        """Start one part again: ``"proxy"`` or a toy backend's name."""
        if part == "proxy" or part in self.get(sandbox_id).proxies:
            return self.restart_proxy(sandbox_id, wait, part)
        return self.restart_backend(sandbox_id, part, wait)

    def touch(self, sandbox_id: str) -> Sandbox:
        return self._update(sandbox_id, last_used=time.time())

    def stop(self, sandbox_id: str, grace: float = 5.0, keep_logs: bool = False,
             created_at: float | None = None) -> None:
        """Terminate every part (SIGTERM, SIGKILL after ``grace``) and forget the sandbox.

        ``created_at``: stop it only if it is still the sandbox created then. A caller that
        judged a record (idle, dead) passes its time: by now the id may name a newer sandbox
        (a learner's graded run starts theirs afresh under the same id), which is left alone."""
        sb = self.get(sandbox_id)
        if created_at is not None and sb.created_at != created_at:
            return
        self._remove(sb, grace=grace, keep_logs=keep_logs)

    def _remove(self, sb: Sandbox, grace: float = 5.0, keep_logs: bool = False) -> None:
        """Stop the processes of ``sb`` (by pid and start time: only its own), then, unless
        a newer sandbox holds its id by now, what the id names: record, cgroups, files."""
        own = {*sb.pids.values(), sb.preload_pid}
        popens = [p for (sid, _), p in self._popens.items() if sid == sb.id and p.pid in own]
        procs.stop_groups([(sb.pids[p], sb.pid_starts.get(p)) for p in sb.pids], grace, popens)
        if sb.preload_pid:
            # It exits by itself once the backends it forked are gone (having reaped them);
            # this only ends one that did not (or that never got to fork them).
            procs.stop_groups([(sb.preload_pid, sb.preload_start)], 2.0, popens)
        for key in [k for k, p in self._popens.items() if k[0] == sb.id and p.pid in own]:
            del self._popens[key]
        with self._lock():
            # Under the lock: a newer sandbox's record is written under it too, before any
            # of its files or processes exist, so it is either seen here or not yet made.
            current = self._read(sb.id)
            if current is not None and current.created_at != sb.created_at:
                return  # the id is a newer sandbox's: its directory and cgroups are its own
            self._path(sb.id).unlink(missing_ok=True)
            os_limits.release(sb.id)  # its cgroups, if it had any (limits.py)
            if not keep_logs:
                shutil.rmtree(self.dir / sb.id, ignore_errors=True)

    def reap_idle(self, max_idle_s: float) -> list[str]:
        """Stop sandboxes unused for ``max_idle_s``, and those whose processes all died;
        returns their ids. Pinned sandboxes (the launcher's own) are never reaped."""
        now = time.time()
        reaped = []
        for sb in self._all():
            if sb.pinned or (sb.status == "starting" and now - sb.created_at < 120):
                continue
            dead = not any(sb.alive(p) for p in sb.part_names)
            idle = now - sb.last_used > max_idle_s
            if dead or idle:
                self._remove(sb)
                reaped.append(sb.id)
        return reaped

    def _reap(self) -> None:
        procs.reap(self._popens.values())
