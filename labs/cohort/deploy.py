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
* ``Swarm``: the ``Docker`` deployment on a single-node swarm of that engine
  (``docker swarm init --advertise-addr 127.0.0.1``): the same files plus compose.swarm.yml,
  merged into one stack file by docker/stackfile.py and deployed with ``docker stack deploy``;
  the site runs the swarm driver (labs/sandbox/swarm.py), so each learner's sandbox is a
  Swarm service with its gateway service, reached on the node's address (loopback here).
  Down: the stack, the sandboxes' services, networks and volumes, then the swarm is left.

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

PROJECT = "lblab-cohort"  # the compose project, and the Swarm stack's name
FRONT = "http://127.0.0.1:30700"
SOCKET_IN_SITE = "/run/lblab-engine.sock"
SITE_SERVICES = ("web", "ws1", "ws2")


def cohort_environment(sandbox_ports: str) -> dict:
    """What the site needs for a cohort on either engine (pure)."""
    return {
        "LBLAB_SANDBOX_PORTS": sandbox_ports,
        # Each simulated learner comes from its own loopback address; the front door
        # says which in X-Forwarded-For, so the per-address rates count them apart.
        "LBLAB_TRUST_FORWARDED": "1",
    }


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
            **cohort_environment(sandbox_ports),
        },
        "volumes": [f"{host_state}:/var/lib/lblab", f"{engine_socket}:{SOCKET_IN_SITE}"],
    }
    return {"version": "3.9", "services": {
        **{name: site for name in SITE_SERVICES},
        "migrate": {"volumes": [f"{host_state}:/var/lib/lblab"]},
    }}


def swarm_override(sandbox_ports: str) -> dict:
    """The override read after compose.swarm.yml for a cohort's stack (pure): the swarm
    driver (compose.swarm.yml's choice, said again so this file alone shows it) and the
    cohort's sandbox ports. The socket, its group and the state directory come from
    compose.yml's variables (docker/engine.py: site_env) as in any stack."""
    site = {"environment": {"LBLAB_SANDBOX_DRIVER": "swarm",
                            **cohort_environment(sandbox_ports)}}
    return {"version": "3.9", "services": {name: site for name in SITE_SERVICES}}


class Docker:
    """compose.yml on our own engine, learners' sandboxes as containers (module docstring).
    ``Swarm`` below is this with the deploying and the taking down replaced."""

    name = "docker"
    # How the engine labels the deployment's containers, and the service each belongs to.
    owner_label = f"com.docker.compose.project={PROJECT}"
    service_label = "com.docker.compose.service"
    service_prefix = ""  # a service's label value is its name in compose.yml

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
        from docker.engine import Engine, EngineError, site_env

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
            # The state directory, owned by the image's user; the engine's socket, its group.
            self._deploy(site_env(self.engine, self.root / "state"))
        except (images.BuildError, EngineError) as exc:
            raise DeployError(str(exc)) from None
        wait_for("every service healthy", self._all_healthy, 600,  # a busy machine: slow
                 why=lambda: f"states: {self._states()}")
        wait_for("the front door", lambda: http_status(f"{FRONT}/healthz") == 200, 60)

    def _deploy(self, site: dict[str, str]) -> None:
        from docker.engine import compose

        override = site_override(site["LBLAB_HOST_STATE_DIR"], site["LBLAB_DOCKER_SOCKET"],
                                 int(site["LBLAB_DOCKER_GID"]), self.sandbox_ports)
        self.files[-1].write_text(json.dumps(override, indent=2))  # JSON is YAML
        self.say("compose up (compose.yml + compose.hostnet.yml + the container driver)")
        compose(self.engine, PROJECT, self.files, "up", "-d", env=self.env, timeout=300)

    def _states(self) -> dict[str, str]:
        """service -> its health, or its status; a one-off that ended: "exited <code>".
        The newest container of each service counts (a swarm keeps replaced tasks')."""
        ids = self.engine.ids("ps", "-a", "--filter", f"label={self.owner_label}")
        # check=False: one removed meanwhile is left out; the others are still printed.
        infos = json.loads(self.engine.docker("inspect", *ids, check=False).stdout or "[]"
                           ) if ids else []
        out = {}
        for info in sorted(infos, key=lambda i: i["Created"]):
            label = info["Config"]["Labels"].get(self.service_label, "")
            service = label.removeprefix(self.service_prefix)
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
        ids = self.engine.ids("ps", "--filter", f"label={self.owner_label}", "--filter",
                              f"label={self.service_label}={self.service_prefix}web")
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
        """Each learner's sandbox's memory now, as the engine charges it: the containers
        labelled with its id together (a container sandbox is one; a swarm sandbox is its
        own and its gateway's, what one learner costs a node)."""
        from labs.sandbox.containers import LABEL, Engine as Api

        api = Api(self.engine.host)
        rows = self.engine.docker("ps", "--filter", f"label={LABEL}", "--format",
                                  '{{.Names}} {{.Label "%s"}}' % LABEL, check=False).stdout
        per_sandbox: dict[str, float] = {}
        for name, _, sandbox in (row.partition(" ") for row in rows.splitlines() if row):
            per_sandbox[sandbox] = per_sandbox.get(sandbox, 0.0) + api.memory_bytes(name) / 1e6
        return list(per_sandbox.values())

    def _take_down(self) -> list[str]:
        """Stop the deployment; what could not be (the engine is cleaned after it)."""
        from docker.engine import compose

        compose(self.engine, PROJECT, self.files, "down", "-v", "--remove-orphans",
                env=self.env, check=False, timeout=180)
        return []

    def down(self) -> list[str]:
        left: list[str] = []
        if self.engine is not None and self.engine.pid:
            left += self._take_down()
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


# ---------------------------------------------------------------- swarm

STACK_LABEL = "com.docker.stack.namespace"


class Swarm(Docker):
    """The Docker deployment as a Swarm stack on a single-node swarm of our own engine,
    learners' sandboxes as Swarm services (module docstring)."""

    name = "swarm"
    owner_label = f"{STACK_LABEL}={PROJECT}"
    service_label = "com.docker.swarm.service.name"
    service_prefix = f"{PROJECT}_"  # a stack's services are named <stack>_<service>

    def __init__(self, sandbox_ports: str = "31100-31999", say=print):
        super().__init__(sandbox_ports, say)
        self.files = [REPO / "compose.yml", REPO / "compose.hostnet.yml",
                      REPO / "compose.swarm.yml", self.root / "compose.cohort.yml"]
        self.stack_file = self.root / "stack.yml"

    def write_stack(self) -> dict:
        """The cohort's override, then the one stack file merged from all four files (what
        ``docker stack deploy`` gets; no engine needed)."""
        from docker import stackfile

        self.files[-1].write_text(json.dumps(swarm_override(self.sandbox_ports), indent=2))
        stack = stackfile.stack(self.files)
        self.stack_file.write_text(stackfile.dump(stack))
        return stack

    def _deploy(self, site: dict[str, str]) -> None:
        if self.engine.swarm_state() == "active":  # an empty swarm a dead run left (locked)
            self.engine.docker("swarm", "leave", "--force", timeout=120)
        self.say("swarm init --advertise-addr 127.0.0.1 (a single-node swarm)")
        self.engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
        self.write_stack()
        self.say("stack deploy (compose.yml + compose.hostnet.yml + compose.swarm.yml, "
                 "merged by docker/stackfile.py; the swarm driver)")
        # The images are this engine's own: no registry to ask for their digests.
        self.engine.docker("stack", "deploy", "--resolve-image", "never", "-c",
                           str(self.stack_file), PROJECT, env={**self.env, **site}, timeout=300)

    def _take_down(self) -> list[str]:
        from labs.sandbox.containers import LABEL

        eng = self.engine
        if eng.swarm_state() != "active":
            return []  # it never got as far as the swarm
        # The site first (it starts no more sandboxes), then the sandboxes: they are the
        # site's services, not the stack's, so `stack rm` leaves them.
        eng.docker("stack", "rm", PROJECT, check=False, timeout=120)
        for service in eng.ids("service", "ls", "--filter", f"label={LABEL}"):
            eng.docker("service", "rm", service, check=False, timeout=60)

        def containers_gone() -> bool:
            return not (eng.ids("ps", "-a", "--filter", f"label={self.owner_label}")
                        or eng.ids("ps", "-a", "--filter", f"label={LABEL}"))

        # The node's agent removes a removed service's containers a moment later; whatever
        # is still there after this, clean() removes and the inventory then counts.
        with contextlib.suppress(DeployError):
            wait_for("the stack's and the sandboxes' containers gone", containers_gone, 120)
        for label in (LABEL, f"{STACK_LABEL}={PROJECT}"):
            for network in eng.ids("network", "ls", "--filter", f"label={label}"):
                eng.docker("network", "rm", network, check=False)
            for volume in eng.ids("volume", "ls", "--filter", f"label={label}"):
                eng.docker("volume", "rm", "-f", volume, check=False)
        eng.docker("swarm", "leave", "--force", check=False, timeout=120)
        if eng.swarm_state() == "active":
            return ["swarm: the engine is still a swarm manager (`swarm leave --force` failed)"]
        return []


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
        options.pop("port_base", None)
        return Swarm(**options)
    raise DeployError(f"--engine {engine!r}: choose processes, docker or swarm")
