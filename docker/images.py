"""Build LBLab's images with no container registry: ``./lab images`` runs this.

Theory of operation
-------------------
Three images come out of docker/Dockerfile: ``lblab`` (every LBLab program), ``lblab-postgres``
and ``lblab-redis``. Nothing is pulled unless asked for:

1. Base images. ``lblab-base:bookworm`` (Debian's python3 3.11 with its venv module) and
   ``lblab-services-base:bookworm`` (Debian's postgresql-15 and redis-server) are root file
   systems made by ``mmdebstrap`` from Debian's packages and loaded with ``docker import``.
   They are made once per engine: an image that exists already is kept. ``--base IMAGE``
   uses another Python 3.11 image instead (``python:3.11-slim`` where a registry answers).
2. Wheelhouse. The runtime packages are requirements.lock less everything only the tests
   need: the packages requirements.in names, plus what they depend on (read from the
   installed distributions' metadata, markers evaluated for this Python), in the lock's
   versions. ``pip wheel`` fetches or builds one wheel each into var/docker/wheels, once per
   content of that list (a stamp file holds its hash).
3. ``docker build --network none`` of each target, the wheelhouse and the code copied in;
   the engine's layer cache makes a rebuild after a code change take seconds.

Each step prints how long it took, and the last line is one JSON object with the timings and
image sizes (``--json`` prints only that), for bench notes and CI logs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "var" / "docker"
WHEELS = WORK / "wheels"
DOCKERFILE = REPO / "docker" / "Dockerfile"

PYTHON_BASE = "lblab-base:bookworm"
SERVICES_BASE = "lblab-services-base:bookworm"
TAG = os.environ.get("LBLAB_IMAGE_TAG", "latest")
IMAGES = {"app": "lblab", "postgres": "lblab-postgres", "redis": "lblab-redis"}

# mmdebstrap: minimal Debian (no docs, man pages or translations: nothing reads them).
_SLIM = ["--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
         "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*"]
BASES = {
    PYTHON_BASE: ["--include=python3,python3-venv"],
    # postgresql-15's install makes a cluster "main"; the image makes its own in the volume.
    SERVICES_BASE: ["--include=postgresql-15,redis-server",
                    "--customize-hook=rm -rf \"$1\"/var/lib/postgresql/15/main "
                    "\"$1\"/etc/postgresql/15/main"],
}


class BuildError(Exception):
    """A step failed; the message says which and what to do."""


# ---------------------------------------------------------------- runtime requirements

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(text: str) -> list[str]:
    """Package names of a requirements file (comments, options and blank lines skipped)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = _NAME.match(line)
        if match:
            out.append(canonical(match.group(1)))
    return out


def closure(roots: list[tuple[str, set[str]]],
            requires: dict[str, list[tuple[str, set[str], Callable[[str], bool]]]]) -> set[str]:
    """Every package reachable from ``roots`` (name, extras asked for).

    ``requires[name]`` lists (dependency, its extras, applies(extra)): whether the dependency
    holds when the package is installed with ``extra`` ("" for none): so ``psycopg[binary]``
    brings psycopg-binary, and locust's ``python-socketio[client]`` brings websocket-client.
    """
    seen: set[tuple[str, str]] = set()
    todo = [(name, extra) for name, extras in roots for extra in ("", *extras)]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for dep, dep_extras, applies in requires.get(name, []):
            if applies(extra):
                todo += [(dep, e) for e in ("", *dep_extras)]
    return {name for name, _ in seen}


def runtime_lock(lock_text: str, wanted: set[str]) -> str:
    """The lines of requirements.lock whose package is in ``wanted``, in the lock's order."""
    lines = [line for line in lock_text.splitlines()
             if line.strip() and not line.startswith("#")
             and requirement_names(line) and requirement_names(line)[0] in wanted]
    missing = wanted - {requirement_names(line)[0] for line in lines}
    if missing:
        raise BuildError(f"requirements.lock has no pin for {', '.join(sorted(missing))}: add "
                         "the pinned line(s) (pip freeze shows them)")
    return "\n".join(lines) + "\n"


# The images' Pythons may be older 3.11 releases than this one (Debian bookworm's is
# 3.11.2): a dependency marked for any of them goes in (redis needs async-timeout there).
IMAGE_PYTHONS = [{}, {"python_full_version": "3.11.2", "python_version": "3.11"}]


def _applies(req) -> Callable[[str], bool]:
    if req.marker is None:
        return lambda extra: True
    return lambda extra: any(req.marker.evaluate({**env, "extra": extra}) for env in IMAGE_PYTHONS)


def installed_requires() -> dict:
    """name -> [(dependency, extras, applies)] from this interpreter's installed packages."""
    from importlib import metadata

    from packaging.requirements import Requirement

    out: dict = {}
    for dist in metadata.distributions():
        reqs = [Requirement(raw) for raw in dist.requires or []]
        out[canonical(dist.metadata["Name"])] = [
            (canonical(r.name), set(r.extras), _applies(r)) for r in reqs]
    return out


def runtime_requirements() -> str:
    from packaging.requirements import Requirement

    roots = []
    for line in (REPO / "requirements.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            roots.append((canonical(req.name), set(req.extras)))
    requires = installed_requires()
    unknown = [name for name, _ in roots if name not in requires]
    if unknown:
        raise BuildError(f"not installed in this virtualenv: {', '.join(unknown)}; run ./lab "
                         "test or .venv/bin/pip install -r requirements.lock first")
    return runtime_lock((REPO / "requirements.lock").read_text(), closure(roots, requires))


# ---------------------------------------------------------------- steps

# The engine the client talks to: DOCKER_HOST unless build_all() is given another.
_DOCKER_HOST: str | None = None


def run(argv: list[str], what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    if _DOCKER_HOST:
        env["DOCKER_HOST"] = _DOCKER_HOST
    proc = subprocess.run(argv, text=True, capture_output=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BuildError(f"{what} failed (exit {proc.returncode}): {' '.join(argv[:6])} ...\n"
                         f"{tail}")
    return proc


def docker() -> str:
    # Debian's client (docker.io) first: it matches the engine ./lab installs.
    debian = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else None
    exe = os.environ.get("LBLAB_DOCKER") or debian or shutil.which("docker")
    if not exe:
        raise BuildError("no docker client: install Debian's docker.io (apt-get install "
                         "docker.io) or set LBLAB_DOCKER")
    return exe


def image_exists(name: str) -> bool:
    try:
        run([docker(), "image", "inspect", name], "docker image inspect")
    except BuildError:
        return False
    return True


def make_base(name: str) -> float:
    """mmdebstrap a root file system and import it as ``name``; seconds taken (0 if kept)."""
    if image_exists(name):
        return 0.0
    if not shutil.which("mmdebstrap"):
        raise BuildError("mmdebstrap is missing: apt-get install mmdebstrap (or give --base "
                         "an image with Python 3.11, e.g. python:3.11-slim)")
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    tarball = WORK / (name.split(":")[0] + ".tar")
    run(["mmdebstrap", "--quiet", "--variant=minbase", *_SLIM, *BASES[name], "bookworm",
         str(tarball)], f"mmdebstrap for {name}")
    run([docker(), "import", "--change", "ENV LANG=C.UTF-8", str(tarball), name],
        f"docker import of {name}")
    tarball.unlink()
    return time.monotonic() - started


def make_wheelhouse() -> float:
    text = runtime_requirements()
    digest = hashlib.sha256(text.encode()).hexdigest()
    stamp = WHEELS / ".stamp"
    if stamp.exists() and stamp.read_text() == digest:
        return 0.0
    started = time.monotonic()
    shutil.rmtree(WHEELS, ignore_errors=True)
    WHEELS.mkdir(parents=True)
    (WHEELS / "requirements.txt").write_text(text)
    # --no-deps: the list is already the whole closure, pinned.
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(WHEELS),
         "-r", str(WHEELS / "requirements.txt")], "pip wheel (the runtime wheelhouse)")
    stamp.write_text(digest)
    return time.monotonic() - started


def build(target: str, args: dict[str, str]) -> float:
    started = time.monotonic()
    argv = [docker(), "build", "--network", "none", "-f", str(DOCKERFILE), "--target", target,
            "-t", f"{IMAGES[target]}:{TAG}"]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    run([*argv, str(REPO)], f"docker build of {IMAGES[target]}", env={"DOCKER_BUILDKIT": "0"})
    return time.monotonic() - started


def image_mb(name: str) -> float:
    out = run([docker(), "image", "inspect", "-f", "{{.Size}}", name], "docker image inspect")
    return round(int(out.stdout.strip()) / 1e6, 1)


def build_all(base: str | None = None, quiet: bool = False,
              docker_host: str | None = None) -> dict:
    global _DOCKER_HOST
    _DOCKER_HOST = docker_host
    def say(msg: str) -> None:
        if not quiet:
            print(f"[images] {msg}", file=sys.stderr, flush=True)

    report: dict = {"seconds": {}}
    total = time.monotonic()
    names = [SERVICES_BASE] if base else [PYTHON_BASE, SERVICES_BASE]
    # The two root file systems are independent downloads: make them at once.
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        for name, seconds in zip(names, pool.map(make_base, names)):
            report["seconds"][name] = round(seconds, 1)
            say(f"{name}: {'made' if seconds else 'kept'} ({report['seconds'][name]} s)")
    report["seconds"]["wheelhouse"] = round(make_wheelhouse(), 1)
    say(f"wheelhouse {WHEELS.relative_to(REPO)}: {report['seconds']['wheelhouse']} s")
    args = {"BASE": base or PYTHON_BASE, "SERVICES_BASE": SERVICES_BASE}
    for target in IMAGES:
        report["seconds"][IMAGES[target]] = round(build(target, args), 1)
        say(f"{IMAGES[target]}:{TAG} built ({report['seconds'][IMAGES[target]]} s, "
            "no network)")
    report["seconds"]["total"] = round(time.monotonic() - total, 1)
    report["images"] = {f"{n}:{TAG}": image_mb(f"{n}:{TAG}") for n in IMAGES.values()}
    report["base"] = args["BASE"]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./lab images", description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="a Python 3.11 image to build on (e.g. python:3.11-slim) "
                        f"instead of {PYTHON_BASE} made from Debian's packages")
    parser.add_argument("--requirements", action="store_true",
                        help="print the runtime requirements (the wheelhouse's list) and exit")
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    opts = parser.parse_args(argv)
    try:
        if opts.requirements:
            print(runtime_requirements(), end="")
            return 0
        report = build_all(opts.base, quiet=opts.json)
    except BuildError as exc:
        print(f"./lab images: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
