"""Sandboxes as containers: one learner's proxy and toy backends per container, on a Docker
engine, with no route out.

Theory of operation
-------------------
``ContainerDriver`` is the container driver of the learner-sandbox service (the seam is
labs/sandbox/drivers.py: the same methods and ``Sandbox`` records as the process driver,
``SandboxService``). Each sandbox is one container of the ``lblab`` image (./lab images):

* **Isolation by construction.** The container runs with ``--network none``: its network
  namespace has a loopback interface and nothing else, so whatever config a learner gives
  their proxy, it can reach only the backends beside it on 127.0.0.1. Memory (no swap), CPU,
  process count and open files are capped by the engine (cgroups), the root file system is
  read-only, and the process inside runs as the unprivileged ``lblab`` user.
* **Inside** (labs/sandbox/container_inside.py, run as a script under docker-init): the
  toy backends (forked from one preloaded parent, as the process driver does) and the
  proxy, on loopback ports numbered as the gateway's outside (the namespace is the
  sandbox's own; the same numbers inside and out let the site place a learner's config
  with the record's ports, as for a process sandbox), started from commands written
  ready-made in ``spec.json``. For each of them it serves a Unix socket in
  ``/sandbox/sock`` relaying to that port, plus ``control.sock`` (restart a part, list the
  parts, wait until every part accepts). ``/sandbox`` is the sandbox's directory in the
  state directory, mounted from the host.
* **Outside**, the site needs plain TCP URLs (admin API, event stream, the proxy's listeners,
  the backends' fault controls): a small gateway process (``gateway``) listens on loopback
  ports from the service's port range and relays each connection to its socket. It is
  started detached, recorded by pid and start time, and restarted by whichever process
  finds it gone (any site process sharing the host's or the site's network namespace can).
  Traffic a lab generates enters through the same gateway, so it reaches the sandbox's
  proxy from inside its namespace; ``exec`` runs a program in the container itself.

Records are JSON files (``<state_dir>/containers/<id>.json``) under an ``flock``, like the
process driver's, so any site process can look at, restart a part of, or stop any sandbox.
The engine is reached through its HTTP API on a Unix socket (``DOCKER_HOST=unix://...``, or
/var/run/docker.sock), with the standard library only: the site's image needs no Docker
client.

Start time with a warm image. What it costs is CPU inside the container, under its CPU cap:
three interpreters start (the inside script, the preloaded backends, the proxy), about
0.7 CPU-seconds in all, from bytecode compiled into the image (the root file system is
read-only: without it every start compiled every module again, seconds). The container's
``serve`` spawns them at once, needing no import of the labs package, and tells when every
part accepts (``ready``) from inside the namespace, so the site neither polls the engine
nor probes parts that are not up yet; one request through the gateway (started before the
container, so its interpreter starts meanwhile) checks the site's path last. ``measure``
reads the container's memory from the engine (bench notes: docs/deploy.md).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fcntl
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import yaml

from labs.sandbox import procs, topology
from labs.sandbox.commands import backend_args, backend_cmd, preloaded_backends_cmd, proxy_cmd
from labs.sandbox.container_inside import Serve, pipe
from labs.sandbox.service import (
    ID_RE,
    Sandbox,
    SandboxError,
    SandboxExists,
    SandboxLimit,
    SandboxNotFound,
    SandboxStartError,
    default_state_dir,
)

IMAGE = os.environ.get("LBLAB_SANDBOX_IMAGE", "lblab:latest")
LABEL = "org.lblab.sandbox"
INNER = {"proxy": 8080, "admin": 9900}  # fixed ports inside every sandbox's own namespace
INNER_BACKEND_BASE = 9001
INNER_LISTENER_BASE = 8081
MOUNT = "/sandbox"
INSIDE = "/app/labs/sandbox/container_inside.py"  # the container's command (a script)
SANDBOX_UID = 10001  # the image's lblab user


@dataclass(frozen=True)
class Limits:
    """What one sandbox container may use (the engine enforces it through cgroups)."""

    memory_mb: int = 192  # hard cap, no swap
    cpus: float = 1.0  # CPU-seconds per second at most (start-up imports need about 1.5)
    pids: int = 96  # processes and threads
    nofile: int = 1024  # open files
    reserve_memory_mb: int = 96  # soft reservation (Swarm places by reservations)


# ---------------------------------------------------------------- the engine's API

class EngineError(SandboxError):
    pass


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def engine_socket(docker_host: str | None = None) -> str:
    host = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        raise EngineError(f"DOCKER_HOST={host!r}: the container driver talks to an engine on a "
                          "Unix socket (unix:///path/docker.sock); run the site on the "
                          "engine's machine or forward its socket")
    return host[len("unix://"):]


class Engine:
    """The few Docker Engine API calls the driver makes (API 1.41: Docker 20.10 and later)."""

    def __init__(self, docker_host: str | None = None, timeout: float = 30.0):
        self.socket = engine_socket(docker_host)
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None,
             ok: tuple[int, ...] = (200, 201, 204)) -> tuple[int, bytes]:
        conn = _UnixHTTPConnection(self.socket, self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, "/v1.41" + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as exc:
            raise EngineError(f"the Docker engine at {self.socket} does not answer ({exc}): is "
                              "it running, and may this user use its socket?") from None
        finally:
            conn.close()
        if resp.status not in ok:
            try:
                why = json.loads(raw).get("message", raw.decode(errors="replace"))
            except ValueError:
                why = raw.decode(errors="replace")
            raise EngineError(f"Docker engine: {method} {path} -> {resp.status}: {why}")
        return resp.status, raw

    def json(self, method: str, path: str, body: dict | None = None, **kw):
        _, raw = self.call(method, path, body, **kw)
        return json.loads(raw) if raw else None

    def image_exists(self, image: str) -> bool:
        status, _ = self.call("GET", f"/images/{quote(image, safe='')}/json", ok=(200, 404))
        return status == 200

    def remove(self, name: str) -> None:
        self.call("DELETE", f"/containers/{quote(name)}?force=true&v=true", ok=(204, 404, 409))

    def inspect(self, name: str) -> dict | None:
        status, raw = self.call("GET", f"/containers/{quote(name)}/json", ok=(200, 404))
        return json.loads(raw) if status == 200 else None

    def memory_bytes(self, name: str) -> int:
        """Memory charged to the container now, less its page cache (as `docker stats`)."""
        stats = self.json("GET", f"/containers/{quote(name)}/stats?stream=false")
        mem = stats.get("memory_stats") or {}
        usage = int(mem.get("usage") or 0)
        detail = mem.get("stats") or {}
        cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        return max(0, usage - int(cache or 0))

    def exec(self, name: str, argv: list[str], timeout: float = 120.0) -> tuple[int, str]:
        """Run ``argv`` in the container; (exit code, stdout and stderr)."""
        ex = self.json("POST", f"/containers/{quote(name)}/exec",
                       {"Cmd": argv, "AttachStdout": True, "AttachStderr": True})
        old, self.timeout = self.timeout, timeout
        try:
            _, raw = self.call("POST", f"/exec/{ex['Id']}/start", {"Detach": False, "Tty": False})
        finally:
            self.timeout = old
        code = self.json("GET", f"/exec/{ex['Id']}/json")["ExitCode"]
        return code, demux(raw)


def demux(raw: bytes) -> str:
    """The text of the engine's multiplexed stdout/stderr stream (8-byte header per frame)."""
    out, i = [], 0
    while i + 8 <= len(raw):
        size = int.from_bytes(raw[i + 4:i + 8], "big")
        out.append(raw[i + 8:i + 8 + size])
        i += 8 + size
    return b"".join(out).decode(errors="replace")


# ---------------------------------------------------------------- the driver

def ask_serve(sandbox_dir: str | Path, command: str, timeout: float = 15.0) -> dict:
    """One command to a sandbox's ``serve`` over its control socket; its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(f"{sandbox_dir}/sock/control.sock")
        sock.sendall(command.encode() + b"\n")
        return json.loads(sock.makefile().readline() or "{}")


class ContainerSandbox(Sandbox):
    """A container sandbox's record. Its parts are not processes the site can see (they
    run in the container's own PID namespace), so ``alive`` asks the container's ``serve``
    which of its children run: every caller of ``Sandbox.alive`` (reuse, the reaper, the
    workshop's refresh) then sees a container sandbox as it is. The toy backends are
    forked from one parent: they are alive while it is, unless one was restarted alone."""

    def alive(self, part: str) -> bool:
        try:
            children = ask_serve(self.log_dir, "parts", timeout=2.0)
        except (OSError, ValueError):
            return False  # no container answering on its socket: nothing of it runs
        if part in children:
            return bool(children[part])
        return part in self.backends and bool(children.get("backends"))

    def measure(self, kind: str = "rss") -> dict[str, int]:
        return {"total": 0}  # the engine charges the container: ContainerDriver.measure



def container_name(sandbox_id: str) -> str:
    return f"lblab-sb-{sandbox_id}"


def inner_ports(names: list[str], template: dict) -> dict[str, int]:
    """The sandbox's ports inside its own namespace (the same in every sandbox)."""
    ports = dict(INNER)
    ports.update({name: INNER_BACKEND_BASE + i for i, name in enumerate(names)})
    extra = [k for k in topology.listener_port_keys(template, names).values() if k != "proxy"]
    ports.update({key: INNER_LISTENER_BASE + i for i, key in enumerate(extra)})
    return ports


def spawn_commands(backends: dict[str, int], config_path: str) -> dict:
    """The commands a sandbox's ``serve`` runs: the preloaded backends, the proxy, and each
    backend alone (to restart one), for the container's own ``python``."""
    return {
        "backends": preloaded_backends_cmd(
            [(f"{MOUNT}/{n}.log", backend_args(n, port)) for n, port in backends.items()],
            die_with_parent=True, python="python"),
        "proxy": proxy_cmd(config_path, python="python"),
        "backend": {n: backend_cmd(n, port, python="python") for n, port in backends.items()},
    }


def run_spec(names: list[str], ports: dict[str, int]) -> dict:
    """What the container runs (written to /sandbox/spec.json): every command ready-made, so
    container_inside.py needs nothing of the labs package to start them."""
    backends = {n: ports[n] for n in names}
    return {"backends": backends, "config": f"{MOUNT}/proxy.yaml",
            "relays": {key: port for key, port in ports.items()},
            "commands": spawn_commands(backends, f"{MOUNT}/proxy.yaml")}


def container_body(sandbox_id: str, host_dir: Path, image: str, limits: Limits) -> dict:
    """The engine's create-container request for one sandbox (pure: tested without I/O)."""
    mb = 1024 * 1024
    return {
        "Image": image,
        # -I: the script's folder stays off sys.path and nothing of the labs package loads.
        "Cmd": ["python", "-I", INSIDE, "--spec", f"{MOUNT}/spec.json"],
        "User": str(SANDBOX_UID),
        "WorkingDir": "/app",
        "Labels": {LABEL: sandbox_id},
        "NetworkDisabled": False,
        "HostConfig": {
            "NetworkMode": "none",
            "Binds": [f"{host_dir}:{MOUNT}:rw"],
            "Memory": limits.memory_mb * mb,
            "MemorySwap": limits.memory_mb * mb,  # no swap beyond the cap
            "MemoryReservation": limits.reserve_memory_mb * mb,
            "NanoCpus": int(limits.cpus * 1e9),
            "PidsLimit": limits.pids,
            "Ulimits": [{"Name": "nofile", "Soft": limits.nofile, "Hard": limits.nofile}],
            "ReadonlyRootfs": True,
            "Tmpfs": {"/tmp": "rw,size=16m"},
            "Init": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "RestartPolicy": {"Name": "no"},
        },
    }


class ContainerDriver:
    """The container driver (see the module docstring); ``make_driver("containers")``."""

    name = "containers"

    listen_host = "127.0.0.1"  # where the proxy's listeners bind inside the sandbox

    def __init__(self, state_dir: str | Path | None = None, host: str = "127.0.0.1",
                 max_sandboxes: int = 40, *, port_range: tuple[int, int] = (20000, 29999),
                 limits=None, image: str = IMAGE, docker_host: str | None = None,
                 start_timeout: float = 20.0, python: str = sys.executable,
                 host_state_dir: str | None = None, **_ignored):
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.dir = self.state_dir / "containers"
        # Where the engine finds the state directory: the same path, unless the site itself
        # runs in a container with the state directory bind-mounted from the host (compose:
        # LBLAB_SANDBOX_HOST_STATE_DIR is the host's side of that mount).
        host_side = host_state_dir or os.environ.get("LBLAB_SANDBOX_HOST_STATE_DIR")
        self.host_dir = Path(host_side) / "containers" if host_side else self.dir
        self.host = "127.0.0.1" if procs.is_loopback(host) else host
        self.max_sandboxes = max_sandboxes
        self.port_range = port_range
        self.limits = limits if isinstance(limits, Limits) else Limits()
        self.image = image
        self.engine = Engine(docker_host)
        self.start_timeout = start_timeout
        self.python = python

    # -- records ---------------------------------------------------------------------------

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
            return ContainerSandbox.from_json(json.loads(self._path(sandbox_id).read_text()))
        except FileNotFoundError:
            return None

    def _write(self, sb: Sandbox) -> None:
        tmp = self.dir / f".{sb.id}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(sb.to_json(), indent=2, sort_keys=True))
        os.replace(tmp, self._path(sb.id))

    def get(self, sandbox_id: str) -> Sandbox:
        sb = self._read(sandbox_id) if ID_RE.match(sandbox_id or "") else None
        if sb is None:
            raise SandboxNotFound(f"no sandbox named {sandbox_id!r}")
        return sb

    def list(self) -> list[Sandbox]:
        if not self.dir.exists():
            return []
        found = [self._read(p.stem) for p in self.dir.glob("*.json")]
        return sorted((s for s in found if s), key=lambda s: (s.created_at, s.id))

    def touch(self, sandbox_id: str) -> Sandbox:
        with self._lock():
            sb = self.get(sandbox_id)
            sb.last_used = time.time()
            self._write(sb)
            return sb

    # -- create ----------------------------------------------------------------------------

    def create(self, sandbox_id: str | None = None, backends: int | list[str] = 4,
               config: dict | None = None, ports: dict | None = None, wait: bool = True, *,
               pinned: bool = False, timeout: float | None = None,
               redis_url: str | None = None, owner: str = "") -> Sandbox:
        sandbox_id = sandbox_id or f"sb-{secrets.token_hex(4)}"
        if not ID_RE.match(sandbox_id):
            raise SandboxError(f"sandbox id {sandbox_id!r}: use 1-40 letters, digits, '-' or '_'")
        if redis_url:
            raise SandboxError("a container sandbox has no route to Redis (--network none): "
                               "its backends keep sessions in memory")
        names = ([f"b{i}" for i in range(1, backends + 1)] if isinstance(backends, int)
                 else list(backends))
        if not names or len(names) > 16 or len(set(names)) != len(names):
            raise SandboxError(f"backends: give 1-16 distinct names or a count, got {backends!r}")
        template = config if config is not None else topology.default_config(names)
        inner = inner_ports(names, template)
        placed = topology.place(template, "127.0.0.1", inner)
        problems = topology.validate(placed)
        if problems:
            raise SandboxError("the proxy refuses this config:\n  " + "\n  ".join(problems))
        longest = max([*inner, "control"], key=len)
        sock = self.dir / sandbox_id / "sock" / f"{longest}.sock"
        if len(os.fsencode(sock)) > 107:  # sun_path: 108 bytes with its NUL
            raise SandboxError(f"the state directory {self.state_dir} is too deep for a "
                               f"container sandbox's Unix sockets ({sock} is "
                               f"{len(os.fsencode(sock))} bytes, 107 at most): give a "
                               "shorter one (LBLAB_STATE_DIR)")
        if not self.engine.image_exists(self.image):
            raise SandboxError(f"the sandbox image {self.image} is not on the engine: build it "
                               "with ./lab images")
        with self._lock():
            existing = self._read(sandbox_id)
            if existing is not None:
                raise SandboxExists(f"sandbox {sandbox_id!r} is already running; stop it first")
            if len(self.list()) >= self.max_sandboxes:
                raise SandboxLimit(f"{self.max_sandboxes} sandboxes are running, the most this "
                                   "driver allows (max_sandboxes): stop one or raise the limit")
            taken = {p for s in self.list() for p in s.ports.values()}
            outer = self._allocate(list(inner), taken)
            # In its own namespace a sandbox's parts listen on the gateway's port numbers, so
            # a config the site places with the record's ports is right inside it too.
            inner, placed = outer, topology.place(template, self.listen_host, outer, "127.0.0.1")
            sb = self._record(sandbox_id, names, template, placed, inner, outer, pinned, owner)
            self._write(sb)
        try:
            started = time.monotonic()
            self._launch(sb)
            self._ensure_gateway(sb)  # the container driver's _launch started it already
            if wait:
                self._wait_ready(sb, timeout or self.start_timeout)
            sb.start_seconds = round(time.monotonic() - started, 3)
            sb.status = "running"
            with self._lock():
                self._write(sb)
            return sb
        except BaseException:
            self._remove(sb, keep_logs=True)
            raise

    # -- the engine's side of one sandbox (the swarm driver, swarm.py, overrides these) ----

    def _launch(self, sb: Sandbox) -> None:
        """Start the sandbox's container (its files are in place, its record written)."""
        self.engine.remove(container_name(sb.id))  # a leftover of a crashed site
        body = container_body(sb.id, self.host_dir / sb.id, self.image, self.limits)
        # The gateway first: its interpreter starts while the engine starts the container.
        self._ensure_gateway(sb)
        self.engine.json("POST", f"/containers/create?name={container_name(sb.id)}", body)
        self.engine.call("POST", f"/containers/{container_name(sb.id)}/start")

    def _state(self, sb: Sandbox) -> tuple[bool, str]:
        """(running, why not) of the sandbox's container."""
        info = self.engine.inspect(container_name(sb.id))
        if info and info["State"]["Running"]:
            return True, ""
        if not info:
            return False, f"container {container_name(sb.id)} is gone"
        return False, (f"container {container_name(sb.id)} is not running (exit status "
                       f"{info['State']['ExitCode']})")

    def _container(self, sb: Sandbox) -> str:
        """The container (name or id) on this engine that runs the sandbox."""
        return container_name(sb.id)

    def _discard(self, sb: Sandbox) -> None:
        """Remove what runs the sandbox: its container and its gateway process."""
        self.engine.remove(container_name(sb.id))
        if self._gateway_alive(sb):
            procs.stop_groups([(sb.pids["gateway"], sb.pid_starts.get("gateway"))], 2.0, [])

    def _allocate(self, keys: list[str], taken: set[int]) -> dict[str, int]:
        lo, hi = self.port_range
        out: dict[str, int] = {}
        for port in random.Random().sample(range(lo, hi + 1), k=hi - lo + 1):
            if len(out) == len(keys):
                break
            if port not in taken and procs.port_free(self.host, port):
                out[keys[len(out)]] = port
        if len(out) < len(keys):
            raise SandboxError(f"no free ports left in {lo}-{hi} for a sandbox's gateway")
        return out

    def _record(self, sandbox_id: str, names: list[str], template: dict, placed: dict,
                inner: dict, outer: dict, pinned: bool, owner: str) -> Sandbox:
        sandbox_dir = self.dir / sandbox_id
        shutil.rmtree(sandbox_dir, ignore_errors=True)
        (sandbox_dir / "sock").mkdir(parents=True)
        (sandbox_dir / "proxy.yaml").write_text(
            f"# sandbox {sandbox_id} (container), written by labs.sandbox.containers\n"
            + yaml.safe_dump(placed, sort_keys=False))
        (sandbox_dir / "spec.json").write_text(json.dumps(run_spec(names, inner)))
        # The container's user writes its logs and sockets here.
        for path in (sandbox_dir, sandbox_dir / "sock"):
            if os.geteuid() == 0:
                os.chown(path, SANDBOX_UID, SANDBOX_UID)
            else:
                path.chmod(0o777)
        h = procs.url_host(self.host)
        keys = topology.listener_port_keys(placed, names)
        now = time.time()
        fields = dict(
            id=sandbox_id, host=self.host, proxy_url=f"http://{h}:{outer['proxy']}",
            admin_url=f"http://{h}:{outer['admin']}",
            backends={n: f"http://{h}:{outer[n]}" for n in names}, ports=outer,
            listeners={name: f"http://{h}:{outer[key]}" for name, key in keys.items()},
            config_path=str(sandbox_dir / "proxy.yaml"), log_dir=str(sandbox_dir),
            created_at=now, last_used=now, pinned=pinned, inner_host=self.host)
        if "owner" in Sandbox.__dataclass_fields__:
            fields["owner"] = owner
        return ContainerSandbox(**fields)

    # -- the gateway -----------------------------------------------------------------------

    def _gateway_alive(self, sb: Sandbox) -> bool:
        return procs.pid_alive(sb.pids.get("gateway"), sb.pid_starts.get("gateway"))

    def _ensure_gateway(self, sb: Sandbox) -> None:
        # Another site container (its own PID namespace, the same network one: compose)
        # may run this sandbox's gateway: its admin port is taken then.
        if self._gateway_alive(sb) or not procs.port_free(self.host, sb.ports["admin"]):
            return
        with self._lock():
            # Only for the sandbox the record holds now: ``sb`` may be a record read before
            # that sandbox was stopped and another started under its id (a graded run starts
            # the learner's sandbox afresh while their dashboard looks at it). Serving the
            # old ports, and writing the old record back over the new one, would send the
            # new sandbox's traffic and config to ports nothing listens on.
            current = self._read(sb.id)
            if current is None or current.created_at != sb.created_at:
                return
            if self._gateway_alive(current):  # another process started it meanwhile
                sb.pids["gateway"] = current.pids["gateway"]
                sb.pid_starts["gateway"] = current.pid_starts.get("gateway")
                return
            argv = [self.python, "-m", "labs.sandbox.containers", "gateway", "--host",
                    self.host, "--dir", f"{sb.log_dir}/sock"]
            for key, port in sb.ports.items():
                argv += ["--map", f"{port}={key}"]
            proc = procs.spawn(argv, Path(sb.log_dir) / "gateway.log",
                               cwd=Path(__file__).resolve().parents[2], env=dict(os.environ))
            ticks = procs.start_ticks(proc.pid)
            sb.pids["gateway"], sb.pid_starts["gateway"] = proc.pid, ticks
            current.pids["gateway"], current.pid_starts["gateway"] = proc.pid, ticks
            self._write(current)

    # -- ready, parts ----------------------------------------------------------------------

    def _probe(self, sb: Sandbox, part: str, timeout: float = 1.0) -> tuple[bool, str]:
        if part == "proxy":
            status, why = procs.http_status(sb.host, sb.ports["admin"], "/healthz", timeout)
            if status != 200:
                return False, f"the admin API ({sb.admin_url}) does not answer: {status or why}"
            # Its listener, asked of the container's serve, not connected to: the proxy
            # records every connection, and the site asks often (a dashboard's part status)
            # while a graded run takes the first connection it sees for its traffic's start.
            try:
                bound = self.control(sb.id, "listening", timeout)["ports"]
            except (SandboxError, KeyError) as exc:
                return False, f"its container does not say what listens ({exc})"
            if sb.ports["proxy"] not in bound:
                return False, f"nothing listens on its listener {sb.proxy_url}"
            return True, f"container {self._container(sb)}, listening on {sb.proxy_url}"
        status, why = procs.http_status(sb.host, sb.ports[part], "/health/live", timeout)
        if status != 200:
            return False, f"GET {sb.backends[part]}/health/live gave {status or why}"
        return True, f"container {self._container(sb)}, answering on {sb.backends[part]}"

    def _exited(self, sb: Sandbox) -> SandboxStartError | None:
        running, why = self._state(sb)
        if running:
            return None
        self._save_logs(sb)
        return SandboxStartError(sb.id, "container", why, Path(sb.log_dir) / "serve.log")

    def _save_logs(self, sb: Sandbox) -> None:
        """What the container printed before it ended (a traceback of ``serve``), into
        serve.log, where a start error points: the container is removed right after."""
        try:
            _, raw = self.engine.call(
                "GET", f"/containers/{quote(container_name(sb.id))}/logs?stdout=1&stderr=1"
                "&tail=40")
        except EngineError:
            return
        text = demux(raw)
        if text and Path(sb.log_dir).is_dir():
            (Path(sb.log_dir) / "serve.log").write_text(text)

    def _wait_ready(self, sb: Sandbox, timeout: float) -> None:
        """Ready when the container's own ``serve`` says every part listens (it watches
        from inside, without a connection), then once more through the gateway: the
        site's path. Nothing here polls the engine or the parts."""
        deadline = time.monotonic() + timeout
        control = Path(sb.log_dir) / "sock" / "control.sock"
        while not control.exists():  # a stat every 10 ms until serve made its socket
            if time.monotonic() > deadline:
                raise self._exited(sb) or SandboxStartError(
                    sb.id, "container", f"its control socket did not appear within "
                    f"{timeout:g}s", Path(sb.log_dir) / "serve.log")
            time.sleep(0.01)
        while True:
            left = max(0.5, deadline - time.monotonic())
            try:
                answer = ask_serve(sb.log_dir, f"ready {left:.2f}", timeout=left + 5)
                break
            except ConnectionRefusedError:
                # The socket's file appears at bind(), a moment before serve listens on it.
                if time.monotonic() > deadline:
                    raise self._exited(sb) or SandboxStartError(
                        sb.id, "container", f"nothing listens on {control}",
                        Path(sb.log_dir) / "serve.log") from None
                time.sleep(0.01)
            except (OSError, ValueError) as exc:
                raise self._exited(sb) or SandboxStartError(
                    sb.id, "container", f"it does not answer on {control} ({exc})",
                    Path(sb.log_dir) / "serve.log") from None
        if not answer.get("ready"):
            waiting = answer.get("waiting") or ["container"]
            part = next((p for p in waiting if p in sb.backends or p == "proxy"), "proxy")
            raise SandboxStartError(sb.id, waiting[0], f"not listening after {timeout:g}s "
                                    f"(waiting for {', '.join(waiting)}; exited: "
                                    f"{answer.get('exited') or 'none'})",
                                    Path(sb.log_dir) / f"{part}.log")
        last = ""
        while True:  # the gateway: its own interpreter may still be starting
            ok, last = self._probe(sb, "proxy", 1.0)
            if ok:
                return
            if time.monotonic() > deadline:
                raise SandboxStartError(sb.id, "gateway", f"not answering after {timeout:g}s: "
                                        f"{last}", Path(sb.log_dir) / "gateway.log")
            time.sleep(0.02)

    def parts(self, sandbox_id: str) -> dict[str, dict]:
        sb = self.get(sandbox_id)
        running, why = self._state(sb)
        if running:
            self._ensure_gateway(sb)
        out = {}
        for part in ["proxy", *sb.backends]:
            if not running:
                out[part] = {"alive": False, "detail": why}
                continue
            ok, detail = self._probe(sb, part)
            out[part] = {"alive": ok, "detail": detail}
        return out

    def control(self, sandbox_id: str, command: str, timeout: float = 15.0) -> dict:
        """One command to the sandbox's ``serve`` (restart NAME | parts)."""
        sb = self.get(sandbox_id)
        try:
            answer = ask_serve(sb.log_dir, command, timeout)
        except (OSError, ValueError) as exc:
            raise SandboxError(f"sandbox {sandbox_id}: its container does not answer "
                               f"({exc}); stop it and start it again") from None
        if "error" in answer:
            raise SandboxError(f"sandbox {sandbox_id}: {answer['error']}")
        return answer

    def restart_part(self, sandbox_id: str, part: str, wait: bool = True) -> Sandbox:
        sb = self.get(sandbox_id)
        if part not in ("proxy", *sb.backends):
            raise SandboxError(f"sandbox {sandbox_id} has no part {part!r}; it has proxy, "
                               f"{', '.join(sb.backends)}")
        self.control(sandbox_id, f"restart {part}")
        if wait:
            deadline = time.monotonic() + self.start_timeout
            while not self._probe(sb, part, 0.5)[0]:
                if time.monotonic() > deadline:
                    raise SandboxStartError(sb.id, part, "not answering after a restart",
                                            Path(sb.log_dir) / f"{part}.log")
                time.sleep(0.05)
        return self.touch(sandbox_id)

    def restart_backend(self, sandbox_id: str, name: str, wait: bool = True) -> Sandbox:
        return self.restart_part(sandbox_id, name, wait)

    def restart_proxy(self, sandbox_id: str, wait: bool = True, part: str = "proxy") -> Sandbox:
        """Start the proxy again from its config file, as the process driver does (what
        the admin API changed since is lost). A container sandbox has one proxy."""
        if part != "proxy":
            raise SandboxError(f"sandbox {sandbox_id} has one proxy, \"proxy\"; a container "
                               f"sandbox runs no balancer {part!r} (several balancers run on "
                               "the process driver)")
        return self.restart_part(sandbox_id, "proxy", wait)

    def kill_part(self, sandbox_id: str, part: str) -> None:
        """SIGKILL one part inside the container (a crash: no draining, no goodbye); it
        stays down until restarted. Returns once ``serve`` sees it gone."""
        sb = self.get(sandbox_id)
        if part not in sb.part_names:
            raise SandboxError(f"sandbox {sandbox_id} has no part {part!r}; it has "
                               f"{', '.join(sb.part_names)}")
        self.control(sandbox_id, f"kill {part}")

    def part_states(self, sandbox_id: str) -> dict[str, tuple[int | None, bool]]:
        """{part: (pid, running)} in one question to the container's ``serve``: the pid is
        the part's in the container's PID namespace (it changes when the part is started
        again), running is False for a part that died. A container that does not answer
        runs nothing: every part (None, False)."""
        sb = self.get(sandbox_id)
        try:
            answer = self.control(sandbox_id, "states", timeout=5.0)
        except SandboxError:
            return {part: (None, False) for part in sb.part_names}
        return {part: ((answer.get(part) or {}).get("pid"),
                       bool((answer.get(part) or {}).get("running")))
                for part in sb.part_names}

    def exec(self, sandbox_id: str, argv: list[str], timeout: float = 120.0) -> tuple[int, str]:
        """Run a program inside the sandbox (its namespace: 127.0.0.1:8080 is its proxy)."""
        return self.engine.exec(self._container(self.get(sandbox_id)), argv, timeout)

    def measure(self, sandbox_id: str, kind: str = "rss") -> dict[str, int]:
        """Memory charged to the sandbox's container (every process in it), in bytes.
        ``kind`` is the process driver's (pss or rss): the engine counts each page once,
        as PSS does, so both get the same figure."""
        return {"total": self.engine.memory_bytes(self._container(self.get(sandbox_id)))}

    # -- stop ------------------------------------------------------------------------------

    def stop(self, sandbox_id: str, grace: float = 5.0, keep_logs: bool = False,
             created_at: float | None = None) -> None:
        """As SandboxService.stop (``created_at``: only if it is still that sandbox)."""
        sb = self.get(sandbox_id)
        if created_at is not None and sb.created_at != created_at:
            return
        self._remove(sb, keep_logs=keep_logs)

    def _remove(self, sb: Sandbox, keep_logs: bool = False) -> None:
        """Remove the sandbox ``sb`` describes, unless a newer one holds its id by now.

        Its container (and the swarm driver's services) are named by the id alone, so the
        check and the removal happen under the records' lock: a newer sandbox's record is
        written under it before its container is made (a reaper that judged the old record
        would otherwise remove a learner's new sandbox in the middle of a graded run)."""
        with self._lock():
            current = self._read(sb.id)
            if current is not None and current.created_at != sb.created_at:
                return
            self._discard(sb)
            self._path(sb.id).unlink(missing_ok=True)
            # Without its sockets' directory a gateway this process could not signal ends
            # itself.
            shutil.rmtree(self.dir / sb.id / "sock", ignore_errors=True)
            if not keep_logs:
                shutil.rmtree(self.dir / sb.id, ignore_errors=True)

    def reap_idle(self, max_idle_s: float) -> list[str]:
        now = time.time()
        reaped = []
        for sb in self.list():
            if sb.pinned:
                continue
            dead = not self._state(sb)[0]
            if dead or now - sb.last_used > max_idle_s:
                self._remove(sb)
                reaped.append(sb.id)
        return reaped


# ---------------------------------------------------------------- outside: the gateway

async def gateway(host: str, sock_dir: Path, mapping: dict[int, str]) -> None:
    """Loopback TCP port -> the sandbox's Unix socket of that part, until SIGTERM."""
    async def relay(name: str, reader, writer) -> None:
        try:
            up_r, up_w = await asyncio.open_unix_connection(str(sock_dir / f"{name}.sock"))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def until_sockets_go() -> None:
        """The sandbox was stopped by a site process that cannot signal this one (another
        container's PID namespace): its sockets' directory, once there, is gone."""
        seen = False
        while not (seen and not sock_dir.is_dir()):
            seen = seen or sock_dir.is_dir()
            await asyncio.sleep(1.0)
        stop.set()

    servers = [await asyncio.start_server(lambda r, w, n=name: relay(n, r, w), host, port)
               for port, name in mapping.items()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(until_sockets_go())
    await stop.wait()
    watch.cancel()
    for server in servers:
        server.close()


def measure_sandboxes(count: int, backends: int, state_dir: str | None = None,
                      settle_s: float = 3.0, driver=None) -> dict:
    """Start ``count`` sandboxes one at a time (the image warm after the first), then read
    each one's memory once idle; stop them all. ``driver``: the class (this one's default)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lblab-measure-") as tmp:
        make = driver or ContainerDriver
        driver = make(state_dir=state_dir or tmp, max_sandboxes=count, start_timeout=90)
        starts, mems = [], []
        try:
            for i in range(count):
                starts.append(driver.create(f"measure-{i}", backends=backends).start_seconds)
            time.sleep(settle_s)
            mems = [driver.measure(f"measure-{i}")["total"] / 1e6 for i in range(count)]
        finally:
            for sb in driver.list():
                driver.stop(sb.id)
    return {"driver": type(driver).__name__, "backends": backends, "start_s": starts,
            "idle_mem_mb": [round(m, 1) for m in mems],
            "limits": dataclasses.asdict(driver.limits)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.sandbox.containers")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="inside a sandbox container: run its parts")
    serve.add_argument("--spec", required=True)
    gw = sub.add_parser("gateway", help="outside: loopback ports to a sandbox's sockets")
    gw.add_argument("--host", default="127.0.0.1")
    gw.add_argument("--dir", required=True)
    gw.add_argument("--map", action="append", default=[], help="PORT=PART")
    measure = sub.add_parser("measure", help="start sandboxes one after another, print their "
                             "start time and idle memory as JSON, stop them")
    measure.add_argument("--count", type=int, default=3)
    measure.add_argument("--backends", type=int, default=4)
    measure.add_argument("--state-dir", default=None)
    opts = parser.parse_args(argv)
    if opts.cmd == "measure":
        print(json.dumps(measure_sandboxes(opts.count, opts.backends, opts.state_dir)))
        return 0
    if opts.cmd == "serve":
        spec_path = Path(opts.spec)
        asyncio.run(Serve(json.loads(spec_path.read_text()), spec_path.parent).run())
        return 0
    mapping = {}
    for item in opts.map:
        port, _, name = item.partition("=")
        mapping[int(port)] = name
    asyncio.run(gateway(opts.host, Path(opts.dir), mapping))
    return 0


if __name__ == "__main__":
    sys.exit(main())
