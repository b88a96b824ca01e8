"""Bring a deployment up for a cohort, and take it down leaving nothing behind.

One class per engine, each with the same few methods (``up``, ``make_instructor``,
``sandbox_memory_mb``, ``down``) and a ``url`` the learners use:

* ``Processes``: the local lab, ``manage.py lab`` (its supervisor starts the site on daphne,
  the default sandbox and the embedded bridge) on the embedded default (SQLite, in-memory
  channel layer), with its state, database and logs in a directory of its own; learners'
  sandboxes are local processes.
* ``Docker``: compose.yml on a Docker engine of our own (docker/engine.py), with the test
  override compose.hostnet.yml (every service on the host's network, loopback ports
  30700-30799) and one more override written here that gives the site the container driver:
  the engine's socket, the state directory bind-mounted at a host path the engine can mount
  into each sandbox container, and one PID namespace for the site's containers (a sandbox's
  gateway process, started by whichever site process started the sandbox, is then seen
  alive by the others). Learners' sandboxes are containers.
* ``swarm``: placed by the ``swarm`` sandbox driver when labs/sandbox/drivers.py has one;
  until then ``make`` refuses it with a message saying so.

``down`` returns what it found left behind (containers, networks, volumes, processes):
an empty list is the promise kept.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSTRUCTOR = "cohort-instructor"


class DeployError(Exception):
    """The deployment could not be brought up; the message says what to do."""


def http_status(url: str, timeout: float = 5.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_for(what: str, ready, timeout: float, every: float = 0.3, why=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise DeployError(f"{what}: not within {timeout:g}s. {why()}".strip())
        time.sleep(every)


def processes_mentioning(needles: list[str]) -> list[str]:
    """Processes whose command line or environment names one of ``needles`` (our own
    directories), other than this one: what a run must not leave behind."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if any(n in cmdline or n in environ for n in needles):
            found.append(f"process {proc.name}: {cmdline[:100]}")
    return found


# ---------------------------------------------------------------- processes

class Processes:
    """The local lab (``manage.py lab``) on the embedded default, learners' sandboxes as
    processes. Ports: the site ``port_base``, the default sandbox's proxy, admin API and
    four backends the next six; learners' sandboxes ``sandbox_ports``."""

    name = "processes"

    def __init__(self, port_base: int = 31000, sandbox_ports: str = "31100-31999",
                 python: str = sys.executable, say=print):
        self.port_base = port_base
        self.sandbox_ports = sandbox_ports
        self.python = python
        self.say = say
        self.root = Path(tempfile.mkdtemp(prefix="lblab-cohort-"))
        self.url = f"http://127.0.0.1:{port_base}"
        self.proc: subprocess.Popen | None = None
        self.env = {**os.environ, "LBLAB_STATE_DIR": str(self.root / "state"),
                    "LBLAB_VAR_DIR": str(self.root / "var"),
                    "LBLAB_SANDBOX_PORTS": sandbox_ports, "PYTHONUNBUFFERED": "1"}
        for name in ("DATABASE_URL", "REDIS_URL", "LBLAB_PUBLIC", "DEBUG"):
            self.env.pop(name, None)  # the embedded default, whatever this shell has set

    def manage(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run([self.python, "manage.py", *args], cwd=REPO, env=self.env,
                              input=input, text=True, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise DeployError(f"manage.py {' '.join(args[:2])} failed: "
                              f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
        return proc.stdout

    def up(self) -> None:
        p = self.port_base  # a taken port: the launcher refuses it, saying which
        log = self.root / "lab.log"
        argv = [self.python, "manage.py", "lab", "--port", str(p), "--proxy-port", str(p + 1),
                "--admin-port", str(p + 2), "--backend-ports", f"{p + 3}-{p + 6}",
                "--state-dir", str(self.root / "state")]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise DeployError(f"manage.py lab exited ({self.proc.returncode}): "
                                  f"{log.read_text(errors='replace')[-1500:]}")
            return "LBLab is running at" in log.read_text(errors="replace")

        wait_for("manage.py lab ready", ready, 180,
                 why=lambda: log.read_text(errors="replace")[-800:])

    def make_instructor(self) -> tuple[str, str]:
        password = secrets.token_urlsafe(18)
        self.manage("createinstructor", INSTRUCTOR, "--password-stdin", input=password + "\n")
        return INSTRUCTOR, password

    def sandbox_memory_mb(self) -> list[float]:
        """PSS of each learner's sandbox (every process of it), idle, as the OS charges it."""
        from labs.sandbox.service import SandboxService

        svc = SandboxService(self.root / "state")
        return [sb.measure("pss")["total"] / 1e6 for sb in svc.list() if sb.id != "default"]

    def down(self) -> list[str]:
        with contextlib.suppress(DeployError, subprocess.TimeoutExpired):
            self.manage("labs", "reap", "--all", "--state-dir", str(self.root / "state"))
        if self.proc is not None and self.proc.poll() is None:
            # Ctrl-C: the supervisor stops everything it started (labs/sandbox/launcher.py).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        left: list[str] = []
        deadline = time.monotonic() + 15  # sockets close and children exit a moment later
        while time.monotonic() < deadline:
            left = processes_mentioning([str(self.root)])
            if not left:
                break
            time.sleep(0.3)
        shutil.rmtree(self.root, ignore_errors=True)
        return left


# ---------------------------------------------------------------- docker

PROJECT = "lblab-cohort"
FRONT = "http://127.0.0.1:30700"
SOCKET_IN_SITE = "/run/lblab-engine.sock"
SITE_SERVICES = ("web", "ws1", "ws2")


def site_override(host_state: str, engine_socket: str, socket_gid: int,
                  sandbox_ports: str) -> dict:
    """The compose override that gives the site the container driver (pure)."""
    site = {
        "pid": "host",
        "group_add": [str(socket_gid)],  # the engine's socket: its group may use it
        "environment": {
            "LBLAB_SANDBOX_DRIVER": "containers",
            "DOCKER_HOST": f"unix://{SOCKET_IN_SITE}",
            "LBLAB_SANDBOX_HOST_STATE_DIR": host_state,
            "LBLAB_SANDBOX_PORTS": sandbox_ports,
            # Each simulated learner comes from its own loopback address; the front door
            # says which in X-Forwarded-For, so the per-address rates count them apart.
            "LBLAB_TRUST_FORWARDED": "1",
        },
        "volumes": [f"{host_state}:/var/lib/lblab", f"{engine_socket}:{SOCKET_IN_SITE}"],
    }
    return {"version": "3.9", "services": {
        **{name: site for name in SITE_SERVICES},
        "migrate": {"volumes": [f"{host_state}:/var/lib/lblab"]},
    }}


class Docker:
    name = "docker"

    def __init__(self, sandbox_ports: str = "31100-31999", say=print):
        self.sandbox_ports = sandbox_ports
        self.say = say
        self.root = Path(tempfile.mkdtemp(prefix="lblab-cohort-"))
        self.url = FRONT
        self.files = [REPO / "compose.yml", REPO / "compose.hostnet.yml",
                      self.root / "compose.cohort.yml"]
        self.engine = None
        self.env = {"SECRET_KEY": "", "DEBUG": ""}  # public mode's own

    def up(self) -> None:
        from docker import images
        from docker.engine import Engine, EngineError, compose

        self.engine = Engine()
        try:
            self.engine.start()
        except EngineError as exc:
            raise DeployError(str(exc)) from None
        left = self.engine.inventory()
        if any(left.values()):
            raise DeployError(f"the engine at {self.engine.data_root} holds leftovers of "
                              f"another run: {left}; stop that run or remove them")
        self.say("building the images (cached after the first time: docker/images.py)")
        try:
            images.build_all(quiet=True, docker_host=self.engine.host)
        except images.BuildError as exc:
            raise DeployError(str(exc)) from None
        state = self.root / "state"
        state.mkdir()
        os.chown(state, 10001, 10001)  # the image's lblab user
        override = site_override(str(state), str(self.engine.socket),
                                 self.engine.socket.stat().st_gid, self.sandbox_ports)
        self.files[-1].write_text(json.dumps(override, indent=2))  # JSON is YAML
        self.say("compose up (compose.yml + compose.hostnet.yml + the container driver)")
        try:
            compose(self.engine, PROJECT, self.files, "up", "-d", env=self.env, timeout=300)
        except EngineError as exc:
            raise DeployError(str(exc)) from None
        wait_for("every service healthy", self._all_healthy, 600,  # a busy machine: slow
                 why=lambda: f"states: {self._states()}")
        wait_for("the front door", lambda: http_status(f"{FRONT}/healthz") == 200, 60)

    def _states(self) -> dict[str, str]:
        """service -> its health, or its status; a one-off that ended: "exited <code>"."""
        out = {}
        for cid in self.engine.ids("ps", "-a", "--filter",
                                   f"label=com.docker.compose.project={PROJECT}"):
            info = json.loads(self.engine.docker("inspect", cid).stdout)[0]
            service = info["Config"]["Labels"]["com.docker.compose.service"]
            state = info["State"]
            out[service] = (state.get("Health") or {}).get("Status") or state["Status"]
            if state["Status"] == "exited":
                out[service] = f"exited {state['ExitCode']}"
        return out

    def _all_healthy(self) -> bool:
        states = self._states()
        waiting = [s for s, st in states.items() if s != "migrate" and st != "healthy"]
        # migrate restarts on failure (PostgreSQL may answer before it serves): done is 0.
        return bool(states) and not waiting and states.get("migrate") == "exited 0"

    def _site_container(self) -> str:
        ids = self.engine.ids("ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                              "--filter", "label=com.docker.compose.service=web")
        if not ids:
            raise DeployError("no running web container")
        return ids[0]

    def make_instructor(self) -> tuple[str, str]:
        password = secrets.token_urlsafe(18)
        argv = ["exec", "-i", self._site_container(), "python", "manage.py",
                "createinstructor", INSTRUCTOR, "--password-stdin"]
        deadline = time.monotonic() + 90
        while True:  # bounded: the site may be healthy a moment before its tables exist
            done = self.engine.docker(*argv, input=password + "\n", timeout=120, check=False)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        if done.returncode != 0:
            raise DeployError("manage.py createinstructor in the web container failed: "
                              f"{(done.stderr or done.stdout).strip()[-1500:]}")
        return INSTRUCTOR, password

    def sandbox_memory_mb(self) -> list[float]:
        """Each learner's sandbox container's memory now, as the engine charges it."""
        from labs.sandbox.containers import LABEL, Engine as Api

        api = Api(self.engine.host)
        names = self.engine.docker("ps", "--filter", f"label={LABEL}", "--format",
                                   "{{.Names}}", check=False).stdout.split()
        return [api.memory_bytes(name) / 1e6 for name in names]

    def down(self) -> list[str]:
        from docker.engine import compose

        left: list[str] = []
        if self.engine is not None and self.engine.pid:
            compose(self.engine, PROJECT, self.files, "down", "-v", "--remove-orphans",
                    env=self.env, check=False, timeout=180)
            # Sandbox containers are the site's, not compose's: clean() removes them too.
            self.engine.clean()
            inventory = self.engine.inventory()
            left += [f"{kind[:-1]} {name}" for kind, names in inventory.items()
                     for name in names]
            run_root = f"{self.engine.run_root}/"  # not a sibling such as ...-swarm
            self.engine.stop(clean=False)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                stray = processes_mentioning([run_root, str(self.root)])
                if not stray:
                    break
                time.sleep(0.3)
            left += stray
        shutil.rmtree(self.root, ignore_errors=True)
        return left


# ---------------------------------------------------------------- choose

def make(engine: str, **options):
    if engine == "processes":
        return Processes(**options)
    if engine == "docker":
        options.pop("port_base", None)
        return Docker(**options)
    if engine == "swarm":
        from labs.sandbox.drivers import DRIVERS

        if "swarm" not in DRIVERS:
            raise DeployError(
                "--engine swarm needs the swarm sandbox driver (labs/sandbox/drivers.py "
                "registers none named 'swarm' yet: it comes from the swarm lane of issue 13). "
                "Use --engine processes or --engine docker meanwhile.")
        raise DeployError("--engine swarm: the swarm sandbox driver is registered, but the "
                          "cohort's swarm deployment is not wired yet (labs/cohort/deploy.py: "
                          "make); use --engine docker meanwhile")
    raise DeployError(f"--engine {engine!r}: choose processes, docker or swarm")
