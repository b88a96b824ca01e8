"""Processes a lab needs beside the sandbox's own: Redis for shared sessions, and another
application server in place of a toy backend.

Redis: ``LBLAB_LABS_REDIS_URL`` (or the site's ``REDIS_URL``) when set; otherwise one
private ``redis-server`` per state directory, started on first use (no persistence,
loopback only) and recorded in ``<state_dir>/labs-redis.json`` so every run and every
process shares it. ``stop_redis`` ends it (``manage.py labs reap --all``, tests).

Apps: ``start_app`` stops the toy backend of that name and starts the app on its port,
then writes the new pid into the sandbox's record, so ``SandboxService.stop`` (and the
idle reaper) stops it like any other part. ``kind: toy`` is the toy backend again in
another mode (gRPC, UDP): its main port speaks that protocol, so its HTTP control API
(faults, /health/live) moves to a port of its own, and the record's URL for that backend
becomes the control port's: the runner's faults and stats reach it there.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path

from labs.sandbox import SandboxService, procs
from labs.sandbox.commands import REPO_ROOT, local_executables


class ServiceError(RuntimeError):
    pass


# ---------------------------------------------------------------- redis

@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_url(state_dir: Path) -> str:
    configured = os.environ.get("LBLAB_LABS_REDIS_URL") or os.environ.get("REDIS_URL")
    if configured:
        return configured
    record = Path(state_dir) / "labs-redis.json"
    with _locked(Path(state_dir) / ".labs-redis.lock"):
        try:
            data = json.loads(record.read_text())
            if procs.pid_alive(data["pid"], data.get("pid_start")) and _ping("127.0.0.1",
                                                                            data["port"]):
                return data["url"]
        except (FileNotFoundError, ValueError, KeyError):
            pass
        exe = shutil.which("redis-server")
        if not exe:
            raise ServiceError("this lab keeps sessions in Redis: install redis-server "
                               "(apt-get install redis-server) or set LBLAB_LABS_REDIS_URL")
        port = _free_port()
        log = Path(state_dir) / "labs-redis.log"
        proc = procs.spawn([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--protected-mode", "yes"], log, cwd=REPO_ROOT)
        deadline = time.monotonic() + 5
        while not _ping("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServiceError(f"redis-server did not start; log: {log}\n"
                                   f"{procs.tail(log, 10)}")
            time.sleep(0.05)
        url = f"redis://127.0.0.1:{port}/0"
        record.write_text(json.dumps({"pid": proc.pid, "pid_start": procs.start_ticks(proc.pid),
                                      "port": port, "url": url}))
        return url


def stop_redis(state_dir: Path) -> bool:
    record = Path(state_dir) / "labs-redis.json"
    try:
        data = json.loads(record.read_text())
    except (FileNotFoundError, ValueError):
        return False
    procs.stop_groups([(data["pid"], data.get("pid_start"))], grace=2.0)
    record.unlink(missing_ok=True)
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- lab PKI

def ensure_pki(names: list[str]) -> Path:
    """The lab PKI (proxy/pki.py) with a certificate for each name; returns its folder.

    The folder is the one the proxy resolves ``pki:`` references in (it follows
    LBLAB_STATE_DIR, which the sandbox's processes inherit), so the runner, the proxy
    and the lab's clients agree. ``init`` keeps what exists and adds what is missing."""
    from proxy import pki

    folder = pki.default_dir()
    with _locked(folder.parent / ".labs-pki.lock"):
        missing = [n for n in names if not (folder / f"{n}.pem").exists()]
        if missing or not (folder / "ca.pem").exists():
            pki.init(folder, names=list(dict.fromkeys([*pki.DEFAULT_NAMES, *names])))
    return folder


# ---------------------------------------------------------------- apps

def gunicorn_argv(host: str, port: int, keepalive: int, threads: int, workers: int) -> list[str]:
    return [local_executables()["gunicorn"], "-b", f"{host}:{port}", "-w", str(workers),
            "-k", "gthread", "--threads", str(threads), "--keep-alive", str(keepalive),
            "--graceful-timeout", "1", "--log-level", "warning",
            "labs.framework.wsgi_app:app"]


def toy_argv(name: str, host: str, port: int, mode: str, control_port: int,
             tls: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "labs.backend", "--name", name, "--host", host, "--port",
            str(port), "--mode", mode, "--control-port", str(control_port)]
    if tls:
        stem = name if tls == "own" else tls
        folder = ensure_pki([])  # the backends' own and the wrong certificates come with it
        argv += ["--tls", "--cert", str(folder / f"{stem}.pem"),
                 "--key", str(folder / f"{stem}.key")]
    return argv


def start_app(service: SandboxService, sandbox_id: str, name: str, app, timeout: float = 15.0):
    """Replace toy backend ``name`` of the sandbox by ``app`` (a definition.App)."""
    sb = service.get(sandbox_id)
    port, host = sb.ports[name], sb.inner_host
    if sb.alive(name):
        procs.stop_groups([(sb.pids[name], sb.pid_starts.get(name))], grace=2.0)
    deadline = time.monotonic() + 5
    while not procs.port_free(host, port):
        if time.monotonic() > deadline:
            raise ServiceError(f"port {port} of {name} stays taken; cannot start {app.kind}")
        time.sleep(0.05)
    control_port = port
    if app.kind == "toy":
        control_port = _free_port()
        argv = toy_argv(name, host, port, app.mode, control_port, app.tls)
    else:
        argv = gunicorn_argv(host, port, app.keepalive, app.threads, app.workers)
    if app.link_delay_ms and app.kind == "gunicorn":
        # The app listens on a port of its own; a relay with the link's latency takes the
        # backend's port. One process group (sh execs the relay), so stopping the part
        # stops both.
        inner = _free_port()
        argv = gunicorn_argv(host, inner, app.keepalive, app.threads, app.workers)
        relay = [sys.executable, "-m", "labs.framework.netdelay", "--listen",
                 f"{host}:{port}", "--target", f"{host}:{inner}", "--delay-ms",
                 f"{app.link_delay_ms:g}"]
        argv = ["/bin/sh", "-c", f"{shlex.join(argv)} & exec {shlex.join(relay)}"]
    env = dict(os.environ, LBLAB_APP_NAME=name,
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT),
                                                      os.environ.get("PYTHONPATH")) if p))
    proc = procs.spawn(argv, sb.log_path(name), cwd=REPO_ROOT, env=env)
    ticks = procs.start_ticks(proc.pid)
    # The sandbox record is the contract every process reads: with the app's pid in it,
    # stop() and the idle reaper end the app like any part.
    with service._lock():  # noqa: SLF001 - same read-modify-write the service does
        current = service.get(sandbox_id)
        current.pids[name], current.pid_starts[name] = proc.pid, ticks
        if control_port != port:
            current.backends[name] = f"http://{procs.url_host(host)}:{control_port}"
        service._write(current)  # noqa: SLF001
    deadline = time.monotonic() + timeout
    while True:
        status, _ = procs.http_status(procs.connect_host(host), control_port, "/health/live",
                                      0.5)
        if status == 200:
            return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            raise ServiceError(f"{app.kind} for {name} did not come up; log: "
                               f"{sb.log_path(name)}\n{procs.tail(sb.log_path(name), 10)}")
        time.sleep(0.05)
