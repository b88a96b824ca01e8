"""Real parts for the explainer's tests: toy backends and a proxy on free loopback ports.

Each part is a real subprocess (`python -m labs.backend`, `python -m proxy`), waited on
until it answers, and stopped (SIGTERM, then SIGKILL) by the fixture that started it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before {url} "
                               f"answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status < 500:
                    return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.05)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last}):\n{tail}")


def spawn(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    fh = open(log, "ab")
    try:
        return subprocess.Popen(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    finally:
        fh.close()


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


@dataclass
class Lab:
    """Toy backends + one proxy, all started by a test."""

    dir: Path
    backends: dict[str, int] = field(default_factory=dict)  # name -> port
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    proxy_port: int = 0
    admin_port: int = 0

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def backend_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.backends[name]}"

    def start_backend(self, name: str, port: int | None = None) -> None:
        port = port or self.backends.get(name) or free_port()
        self.backends[name] = port
        log = self.dir / f"{name}.log"
        proc = spawn([sys.executable, "-m", "labs.backend", "--name", name, "--port", str(port)],
                     log)
        self.procs[name] = proc
        wait_http(f"http://127.0.0.1:{port}/health/live", proc=proc, log=log)

    def ports(self) -> None:
        self.proxy_port = self.proxy_port or free_port()
        self.admin_port = self.admin_port or free_port()

    def config(self, interval: str = "200ms", timeout: str = "150ms", unhealthy: int = 2,
               healthy: int = 2, algorithm: str = "round_robin") -> dict:
        self.ports()
        return {
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            "listeners": {"web": {"bind": f"127.0.0.1:{self.proxy_port}", "protocol": "http",
                                  "routes": ["all"]}},
            "routes": {"all": {"match": {}, "forward": "web"}},
            "pools": {"web": {
                "balancer": {"algorithm": algorithm},
                "health": {"type": "http", "path": "/health", "interval": interval,
                           "timeout": timeout, "unhealthy_threshold": unhealthy,
                           "healthy_threshold": healthy},
                "deregistration_delay": "1s",
                "backends": [{"name": n, "address": f"127.0.0.1:{p}"}
                             for n, p in self.backends.items()],
            }},
        }

    def start_proxy(self, config: dict | None = None) -> None:
        self.ports()
        path = self.dir / "proxy.yaml"
        path.write_text(yaml.safe_dump(config or self.config(), sort_keys=False))
        log = self.dir / "proxy.log"
        proc = spawn([sys.executable, "-m", "proxy", "--config", str(path)], log)
        self.procs["proxy"] = proc
        wait_http(f"{self.admin_url}/healthz", proc=proc, log=log)

    def kill(self, name: str) -> None:
        stop(self.procs[name])

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop(proc)


def start_lab(tmp: Path, backends: int = 2, **config) -> Lab:
    lab = Lab(dir=tmp)
    try:
        for i in range(1, backends + 1):
            lab.start_backend(f"b{i}")
        lab.start_proxy(lab.config(**config) if config else None)
    except BaseException:
        lab.stop_all()
        raise
    return lab


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout}s")
