"""A Docker engine of our own: start ``dockerd`` with its own socket, data root, exec root and
pid file; stop it by that pid. Used by tests/deploy and ``./lab cohort``.

Theory of operation
-------------------
The engine's files live under one root (default /var/lib/lblab-docker for data, kept between
runs so that built images and their layers are a cache; /run/lblab-docker for the socket, the
pid file and the exec root, gone at reboot). Nothing here touches a system engine
(/var/run/docker.sock): every client call names this engine's socket (``DOCKER_HOST``).

The engine runs without a default bridge and without touching iptables: LBLab's tests give
containers the host's network or none at all, so the host's firewall and the addresses of
another engine on the machine are left alone. Swarm mode (``docker swarm init``) adds its own
networks when asked.

Two runs must not share a data root at once: ``Engine`` holds an ``flock`` on
``<data_root>.lock`` for its whole life, so a second run (another pytest worker, a cohort
beside a test) waits for the first one's engine to stop, then starts its own on the same
cache.

Stopping: SIGTERM to the recorded pid (dockerd then stops its containers and its
containerd), SIGKILL after a grace; the pid is checked against its start time first, so a
reused pid is never signalled. Before stopping, ``Engine.stop`` removes every container,
service, network and volume it finds (``clean``), so a run leaves nothing behind but images.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

DATA_ROOT = Path(os.environ.get("LBLAB_DOCKER_DATA", "/var/lib/lblab-docker"))
RUN_ROOT = Path(os.environ.get("LBLAB_DOCKER_RUN", "/run/lblab-docker"))


SITE_UID = 10001  # the lblab image's user (docker/Dockerfile)


class EngineError(Exception):
    """The engine could not be started or used; the message says what to do."""


def client_path() -> str:
    # Debian's client (docker.io) first: it matches the engine we start.
    for path in ("/usr/bin/docker", shutil.which("docker")):
        if path and os.access(path, os.X_OK):
            return path
    raise EngineError("no docker client: apt-get install docker.io (./lab test installs it)")


def _start_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw.rpartition(")")[2].split()[19])


class Engine:
    def __init__(self, data_root: Path = DATA_ROOT, run_root: Path = RUN_ROOT,
                 start_timeout: float = 60.0):
        self.data_root = Path(data_root)
        self.run_root = Path(run_root)
        self.socket = self.run_root / "docker.sock"
        self.pidfile = self.run_root / "dockerd.pid"
        self.log_path = self.run_root / "dockerd.log"
        self.host = f"unix://{self.socket}"
        self.start_timeout = start_timeout
        self.pid: int | None = None
        self._ticks: int | None = None
        self._lock_fh = None
        self._proc: subprocess.Popen | None = None

    # -- life ---------------------------------------------------------------------------

    def start(self) -> "Engine":
        dockerd = "/usr/sbin/dockerd"
        if not os.access(dockerd, os.X_OK):
            raise EngineError("no dockerd: apt-get install docker.io (./lab test installs it)")
        if os.geteuid() != 0:
            raise EngineError("starting a Docker engine needs root (./lab test runs as root here)")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(str(self.data_root) + ".lock", "a+")
        fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
        self.run_root.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.socket.unlink(missing_ok=True)
        argv = [dockerd, "--host", self.host, "--data-root", str(self.data_root),
                "--exec-root", str(self.run_root / "exec"), "--pidfile", str(self.pidfile),
                "--bridge", "none", "--iptables=false", "--ip-masq=false",
                "--log-level", "warn"]
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.pid = self._proc.pid
        self._ticks = _start_ticks(self.pid)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise EngineError(f"dockerd exited (status {self._proc.returncode}); its log: "
                                  f"{self.log_path}\n{self._log_tail()}")
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"dockerd did not answer within {self.start_timeout:g}s; "
                                  f"its log: {self.log_path}\n{self._log_tail()}")
            time.sleep(0.2)

    def _log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _stop_leftover(self) -> None:
        """An earlier run that died without stopping its engine: stop that one (by the pid in
        its pid file, only if that pid is a dockerd)."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm == "dockerd":
                self._signal_and_wait(pid, _start_ticks(pid), grace=20.0)

    def stop(self, clean: bool = True) -> None:
        try:
            if clean and self.pid and self._alive():
                self.clean()
        finally:
            if self.pid:
                self._signal_and_wait(self.pid, self._ticks, grace=20.0)
                if self._proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._proc.wait(5)
                self.pid = None
                self._unmount_leftovers()
            if self._lock_fh is not None:
                fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
                self._lock_fh.close()
                self._lock_fh = None

    def mounts(self) -> list[str]:
        """Mount points under this engine's run root (dockerd's netns/default, a container's
        leftovers): none should outlive the engine."""
        prefix = f"{self.run_root}/"
        with open("/proc/self/mounts") as fh:
            points = [line.split()[1] for line in fh]
        return [p for p in points if p.startswith(prefix)]

    def _unmount_leftovers(self) -> None:
        # dockerd mounts exec/netns/default and does not unmount it when it stops, so every
        # start and stop would leave one more nsfs mount behind.
        for point in reversed(self.mounts()):
            subprocess.run(["umount", point], capture_output=True, check=False, timeout=10)

    def _alive(self) -> bool:
        return bool(self.pid) and _start_ticks(self.pid) == self._ticks

    @staticmethod
    def _signal_and_wait(pid: int, ticks: int | None, grace: float) -> None:
        if ticks is None or _start_ticks(pid) != ticks:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _start_ticks(pid) == ticks and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if _start_ticks(pid) == ticks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> "Engine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- use ----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, check: bool = True, timeout: float = 300,
               input: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([client_path(), *args], env={**self.env(), **(env or {})}, text=True,
                              capture_output=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise EngineError(f"docker {' '.join(args[:4])} failed ({proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def ids(self, *args: str) -> list[str]:
        return self.docker(*args, "-q", check=False).stdout.split()

    def inventory(self) -> dict[str, list[str]]:
        """What exists besides images: containers, services, networks and volumes (the
        engine's own networks bridge/host/none and Swarm's ingress are not counted)."""
        own = {"bridge", "host", "none", "ingress", "docker_gwbridge"}
        networks = [n for n in self.docker("network", "ls", "--format", "{{.Name}}",
                                           check=False).stdout.split() if n not in own]
        swarm = self.swarm_state() == "active"
        return {"containers": self.ids("ps", "-a"),
                "services": self.ids("service", "ls") if swarm else [],
                "networks": networks, "volumes": self.ids("volume", "ls")}

    def swarm_state(self) -> str:
        out = self.docker("info", "--format", "{{json .Swarm.LocalNodeState}}", check=False)
        with contextlib.suppress(ValueError):
            return json.loads(out.stdout or '""')
        return ""

    def clean(self) -> None:
        if self.swarm_state() == "active":
            self.docker("swarm", "leave", "--force", check=False, timeout=60)
        for cid in self.ids("ps", "-a"):
            self.docker("rm", "-f", "-v", cid, check=False)
        for network in self.inventory()["networks"]:
            self.docker("network", "rm", network, check=False)
        for volume in self.ids("volume", "ls"):
            self.docker("volume", "rm", "-f", volume, check=False)


def site_env(engine: Engine, state_dir: Path) -> dict[str, str]:
    """What compose.yml's site needs to start learners' sandboxes on this engine: its socket,
    the socket's group, and the host directory behind the state volume (made here, owned by
    the image's user)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(state_dir, SITE_UID, SITE_UID)
    return {"LBLAB_DOCKER_SOCKET": str(engine.socket),
            "LBLAB_DOCKER_GID": str(engine.socket.stat().st_gid),
            "LBLAB_HOST_STATE_DIR": str(state_dir)}


def compose(engine: Engine, project: str, files: Sequence[str | Path], *args: str,
            env: dict[str, str] | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
    """``docker-compose -p project -f file... args`` against this engine."""
    exe = shutil.which("docker-compose")
    if not exe:
        raise EngineError("no docker-compose: apt-get install docker-compose "
                          "(./lab test installs it)")
    argv = [exe, "-p", project]
    for path in files:
        argv += ["-f", str(path)]
    proc = subprocess.run([*argv, *args], env={**engine.env(), **(env or {})}, text=True,
                          capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise EngineError(f"docker-compose {' '.join(args[:3])} failed ({proc.returncode}):\n"
                          f"{(proc.stderr + proc.stdout).strip()[-3000:]}")
    return proc
