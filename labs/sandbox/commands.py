"""The exact command lines of every LBLab process, in one place.

The launcher (local processes) and compose.yml (containers) run the same programs with the
same arguments; only executables (``python`` vs this venv's interpreter) and host/port
values differ. tests/labs/test_compose.py parses compose.yml and checks every service's
command against these builders, so the two cannot drift apart.

Each builder takes the executable as a keyword: the launcher passes absolute paths from the
running virtualenv (``local_executables()``), compose uses the bare names on the image's
PATH (the defaults).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_WEB_WORKERS = 2
# Threads per gunicorn worker. A learner's "start my sandbox" holds its request until the
# sandbox answers (seconds; a container's start on a busy host, more): with one request per
# worker, two such starts made every other learner's page wait (a 20-learner cohort on
# containers waited 15 s at p95 to join its workshop). Threads let the waits overlap.
DEFAULT_WEB_THREADS = 8


def proxy_cmd(config_path: str, *, python: str = "python") -> list[str]:
    return [python, "-m", "proxy", "--config", str(config_path)]


def proxy_check_cmd(config_path: str, *, python: str = "python") -> list[str]:
    return [python, "-m", "proxy", "--check", str(config_path)]


def backend_args(name: str, port: int, host: str = "127.0.0.1",
                 redis_url: str | None = None) -> list[str]:
    args = ["--name", name, "--port", str(port), "--host", host]
    if redis_url:
        args += ["--redis-url", redis_url]
    return args


def backend_cmd(name: str, port: int, host: str = "127.0.0.1", redis_url: str | None = None,
                *, python: str = "python") -> list[str]:
    return [python, "-m", "labs.backend", *backend_args(name, port, host, redis_url)]


def preloaded_backends_cmd(backends: Sequence[tuple[str, Sequence[str]]], *,
                           die_with_parent: bool = False, python: str = "python") -> list[str]:
    """Several toy backends forked from one preloaded parent (labs/backend/preload.py):
    ``backends`` is (log file, ``backend_args(...)``) per backend."""
    cmd = [python, "-m", "labs.backend", "--preload"]
    if die_with_parent:
        cmd.append("--die-with-parent")
    for log, args in backends:
        cmd += ["--backend", str(log), shlex.join(args)]
    return cmd


def bridge_cmd(admin_url: str, sandbox_id: str, *, python: str = "python") -> list[str]:
    return [python, "manage.py", "bridge", "--admin-url", admin_url, "--sandbox", sandbox_id]


def migrate_cmd(*, python: str = "python") -> list[str]:
    return [python, "manage.py", "migrate", "--noinput"]


def daphne_cmd(host: str, port: int, *, daphne: str = "daphne") -> list[str]:
    return [daphne, "-b", host, "-p", str(port), "lblab.asgi:application"]


def gunicorn_cmd(host: str, port: int, workers: int = DEFAULT_WEB_WORKERS,
                 threads: int = DEFAULT_WEB_THREADS, *, gunicorn: str = "gunicorn") -> list[str]:
    return [gunicorn, "-b", f"{host}:{port}", "-w", str(workers), "--threads", str(threads),
            "lblab.wsgi:application"]


def locust_cmd(locustfile: str, host_url: str, users: int, spawn_rate: float, duration_s: int,
               csv_prefix: str, *, locust: str = "locust") -> list[str]:
    return [locust, "-f", str(locustfile), "--headless", "-u", str(users), "-r", f"{spawn_rate:g}",
            "-t", f"{duration_s}s", "--host", host_url, "--csv", str(csv_prefix),
            "--only-summary", "--exit-code-on-error", "0", "--stop-timeout", "3"]


def local_executables() -> dict[str, str]:
    """Keyword arguments for the builders that run the programs of this virtualenv."""
    bindir = Path(sys.executable).parent

    def script(name: str) -> str:
        path = bindir / name
        return str(path) if path.exists() else name

    return {"python": sys.executable, "daphne": script("daphne"),
            "gunicorn": script("gunicorn"), "locust": script("locust")}
