"""Sandboxes as Swarm services: each learner's sandbox placed by a Docker Swarm manager on
any node with room, so that adding a node adds room for learners.

Theory of operation
-------------------
``SwarmDriver`` is the container driver (containers.py) with the engine's side replaced;
records, ports, configs, readiness and the in-sandbox ``serve`` are the container driver's.
A sandbox is two services and one volume, all named after it:

* ``lblab-sb-<id>``, the sandbox: one replica of the ``lblab`` image running what a
  container sandbox runs (the toy backends and the proxy on loopback, a Unix socket per
  part), after ``serve`` here wrote the files a container sandbox finds in its directory. Swarm
  attaches a service to no node-local ``none`` network, so each sandbox gets an overlay
  network of its own, ``Internal`` (no gateway out) and with no other member
  (``lblab-sbnet-<id>-<random>``): its container has loopback and one interface on a /24
  where nothing else lives, and no default route. Whatever config a learner gives their
  proxy, it reaches only its own backends.
  Memory, CPU and process limits are the task's resource limits; its memory and CPU
  *reservations* are what the manager places by: a node takes a sandbox only while the
  reservations of what runs there leave room, else the task waits ("insufficient
  resources"), and the driver says the swarm is full. Read-only root file system, no
  capabilities, the unprivileged ``lblab`` user, as a container sandbox (docs/deploy.md
  lists what Swarm cannot set: no swap cap, no ``no-new-privileges``).
  Those files (proxy config, run spec) travel in the service's environment
  (``LBLAB_SANDBOX_SEED``): the node it lands on shares no directory with the site.
* ``lblab-sb-<id>`` the volume: a tmpfs (the local volume driver's ``type=tmpfs``) made on
  whichever node the task lands, holding the parts' sockets and logs; it goes with the
  node's memory, not its disk.
* ``lblab-sbgw-<id>``, the gateway: pinned to the sandbox's node (``node.id==``), on that
  node's host network, mounting the same volume; it relays TCP ports on the node's address
  (the address the node joined the swarm with, read from the engine) to the sandbox's
  sockets, as the container driver's gateway process does on loopback. The site reaches
  the admin API, event stream, listeners, backends' fault controls and ``control.sock``
  (restart a part) there. On a single-node swarm made with ``--advertise-addr 127.0.0.1``
  that is loopback.

The manager's API (``DOCKER_HOST``, a Unix socket) is the only engine the site talks to.
``exec`` and ``measure`` need the container's own engine, so they work for sandboxes on the
site's node (the manager) and say so for the others. A task that dies is not restarted
(restart condition ``none``, as a container sandbox): the site sees it stopped, as with the
other drivers, and the learner starts again, wherever there is room then.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from labs.sandbox import containers, procs
from labs.sandbox.containers import (
    IMAGE,
    LABEL,
    MOUNT,
    SANDBOX_UID,
    ContainerDriver,
    Engine,
    Limits,
    container_name,
)
from labs.sandbox.service import Sandbox, SandboxError, SandboxLimit, SandboxStartError

SEED_ENV = "LBLAB_SANDBOX_SEED"
MB = 1024 * 1024
# Placement constraints for sandboxes, ";"-separated (e.g. node.labels.lblab-sandboxes==yes).
CONSTRAINTS_ENV = "LBLAB_SWARM_CONSTRAINTS"
# A task's states (swarmkit): on its way or running; over.
COMING = ("assigned", "accepted", "preparing", "ready", "starting", "running")
ENDED = ("complete", "shutdown", "failed", "rejected", "orphaned", "remove")
# How long a task may wait for a node with room before the driver calls the swarm full.
FULL_AFTER_S = 5.0


@dataclass(frozen=True)
class SwarmLimits(Limits):
    """A container sandbox's limits, plus the CPU the manager reserves for it when placing.

    A sandbox at rest uses next to no CPU; its reservation is what lets a node take many
    (0.05 CPU: 20 per core), its limit what one busy lab run may use. Memory reserved: an
    idle sandbox with 4 backends uses about 98 MB (docs/deploy.md), so that a node the
    manager calls full still has the memory its sandboxes use."""

    reserve_memory_mb: int = 112
    reserve_cpus: float = 0.05


@dataclass(frozen=True)
class GatewayLimits:
    memory_mb: int = 64
    cpus: float = 0.5
    pids: int = 16
    reserve_memory_mb: int = 20  # an idle gateway uses about 17 MB


def volume_name(sandbox_id: str) -> str:
    return container_name(sandbox_id)


def gateway_name(sandbox_id: str) -> str:
    return f"lblab-sbgw-{sandbox_id}"


def network_name(sandbox_id: str) -> str:
    """A new name each start: a removed overlay network's name stays taken on the node for
    a moment after the manager dropped it."""
    return f"lblab-sbnet-{sandbox_id}-{secrets.token_hex(3)}"


def constraints_from_env() -> list[str]:
    return [c.strip() for c in os.environ.get(CONSTRAINTS_ENV, "").split(";") if c.strip()]


# ---------------------------------------------------------------- service specs (pure)

def _volume_mount(sandbox_id: str) -> dict:
    """The sandbox's tmpfs volume, made on the node that first mounts it."""
    return {"Type": "volume", "Source": volume_name(sandbox_id), "Target": MOUNT,
            "VolumeOptions": {"Labels": {LABEL: sandbox_id}, "DriverConfig": {
                "Name": "local", "Options": {
                    "type": "tmpfs", "device": "tmpfs",
                    "o": f"size=16m,uid={SANDBOX_UID},gid={SANDBOX_UID},mode=0700"}}}}


def _confined(image: str, args: list[str], sandbox_id: str) -> dict:
    """What both services' containers share: image, user, mounts and the lack of rights."""
    return {"Image": image, "Args": args, "User": str(SANDBOX_UID), "Dir": "/app",
            "Labels": {LABEL: sandbox_id}, "ReadOnly": True, "Init": True,
            "CapabilityDrop": ["ALL"], "StopGracePeriod": int(1e9),
            "Mounts": [_volume_mount(sandbox_id),
                       {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 16 * MB}}]}


def sandbox_service(sandbox_id: str, image: str, limits: SwarmLimits, seed: dict,
                    constraints: list[str], network: str, command: list[str]) -> dict:
    """The engine's create-service request for one sandbox (pure: tested without I/O).
    ``command``: what a container sandbox runs; ``serve`` seeds the files, then runs it."""
    spec = _confined(image, ["python", "-m", "labs.sandbox.swarm", "serve", "--", *command],
                     sandbox_id)
    spec["Env"] = [f"{SEED_ENV}={json.dumps(seed, separators=(',', ':'))}"]
    spec["Ulimits"] = [{"Name": "nofile", "Soft": limits.nofile, "Hard": limits.nofile}]
    return {
        "Name": container_name(sandbox_id),
        "Labels": {LABEL: sandbox_id},
        "TaskTemplate": {
            "ContainerSpec": spec,
            "Resources": {
                "Limits": {"MemoryBytes": limits.memory_mb * MB,
                           "NanoCPUs": int(limits.cpus * 1e9), "Pids": limits.pids},
                "Reservations": {"MemoryBytes": limits.reserve_memory_mb * MB,
                                 "NanoCPUs": int(limits.reserve_cpus * 1e9)},
            },
            "RestartPolicy": {"Condition": "none"},
            "Placement": {"Constraints": list(constraints)},
            "Networks": [{"Target": network}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        # No virtual IP: nothing connects to the sandbox over its network (the gateway uses
        # its sockets), so the manager allocates no load-balancer address on it.
        "EndpointSpec": {"Mode": "dnsrr"},
    }


def network_request(sandbox_id: str, network: str) -> dict:
    """The sandbox's own network: an overlay with no way out (``Internal``) and no other
    member, so its container has an interface (Swarm gives a service no ``none``) that
    leads nowhere."""
    return {"Name": network, "Driver": "overlay", "Internal": True,
            "CheckDuplicate": True, "Labels": {LABEL: sandbox_id}}


def gateway_service(sandbox_id: str, image: str, node_id: str, address: str,
                    ports: dict[str, int], limits: GatewayLimits = GatewayLimits()) -> dict:
    """The gateway beside a sandbox: its node, that node's host network and address."""
    args = ["python", "-m", "labs.sandbox.containers", "gateway", "--host", address,
            "--dir", f"{MOUNT}/sock"]
    for key, port in sorted(ports.items(), key=lambda kv: kv[1]):
        args += ["--map", f"{port}={key}"]
    return {
        "Name": gateway_name(sandbox_id),
        "Labels": {LABEL: sandbox_id},
        "TaskTemplate": {
            "ContainerSpec": _confined(image, args, sandbox_id),
            "Resources": {
                "Limits": {"MemoryBytes": limits.memory_mb * MB,
                           "NanoCPUs": int(limits.cpus * 1e9), "Pids": limits.pids},
                "Reservations": {"MemoryBytes": limits.reserve_memory_mb * MB},
            },
            # The gateway holds no state: the engine restarts it where the sandbox is.
            "RestartPolicy": {"Condition": "any", "Delay": int(0.2e9)},
            "Placement": {"Constraints": [f"node.id=={node_id}"]},
            "Networks": [{"Target": "host"}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }


def rehome(sb: Sandbox, host: str) -> Sandbox:
    """The record with every URL on ``host`` (the node the sandbox landed on)."""
    def move(url: str) -> str:
        scheme, _, rest = url.partition("://")
        port = rest.rpartition(":")[2]
        return f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}"

    return dataclasses.replace(
        sb, host=host, proxy_url=move(sb.proxy_url), admin_url=move(sb.admin_url),
        backends={k: move(v) for k, v in sb.backends.items()},
        listeners={k: move(v) for k, v in sb.listeners.items()})


def task_view(tasks: list[dict]) -> dict | None:
    """The service's current task (the newest; a replica's older ones are history)."""
    if not tasks:
        return None
    return max(tasks, key=lambda t: (t.get("Version", {}).get("Index", 0), t.get("CreatedAt", "")))


def waiting_for_room(task: dict) -> bool:
    status = task.get("Status") or {}
    return status.get("State") == "pending" and any(
        word in (status.get("Err") or "") for word in ("insufficient resources",
                                                        "no suitable node"))


# ---------------------------------------------------------------- the manager's API

class SwarmEngine(Engine):
    """The Swarm calls of the Engine API (1.41) the driver makes, on the manager's socket."""

    def service(self, name: str) -> dict | None:
        status, raw = self.call("GET", f"/services/{quote(name)}", ok=(200, 404))
        return json.loads(raw) if status == 200 else None

    def create_service(self, spec: dict, exist_ok: bool = False) -> None:
        """Create a service; with ``exist_ok``, one of that name already there is fine
        (409: another caller made it first)."""
        self.call("POST", "/services/create", spec, ok=(200, 201, 409) if exist_ok else
                  (200, 201))

    def remove_service(self, name: str) -> None:
        self.call("DELETE", f"/services/{quote(name)}", ok=(200, 404))

    def task(self, service: str) -> dict | None:
        filters = quote(json.dumps({"service": [service]}))
        return task_view(self.json("GET", f"/tasks?filters={filters}") or [])

    def node(self, node_id: str) -> dict:
        return self.json("GET", f"/nodes/{quote(node_id)}")

    def local_node(self) -> str:
        info = self.json("GET", "/info")
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise SandboxError(f"the engine at {self.socket} is not a Swarm manager: run "
                               "`docker swarm init` there (or set DOCKER_HOST to a manager's "
                               "socket), or use LBLAB_SANDBOX_DRIVER=containers")
        return swarm["NodeID"]

    def containers_labelled(self, sandbox_id: str) -> list[str]:
        filters = quote(json.dumps({"label": [f"{LABEL}={sandbox_id}"]}))
        return [c["Id"] for c in self.json("GET", f"/containers/json?all=1&filters={filters}")]

    def service_logs(self, name: str, tail: int = 40) -> str:
        """The last lines a service's tasks wrote, from whichever node they ran on."""
        status, raw = self.call("GET", f"/services/{quote(name)}/logs?stdout=1&stderr=1"
                                f"&tail={tail}", ok=(200, 404))
        return containers.demux(raw) if status == 200 else ""

    def create_network(self, request: dict) -> None:
        self.call("POST", "/networks/create", request)

    def remove_network(self, name: str) -> bool:
        """Removed (or gone); False while a container is still attached."""
        try:
            status, _ = self.call("DELETE", f"/networks/{quote(name)}", ok=(204, 404, 403, 409))
        except containers.EngineError as exc:  # removed between the manager's two looks
            if "not found" in str(exc):
                return True
            raise
        return status in (204, 404)

    def networks_labelled(self, sandbox_id: str) -> list[str]:
        filters = quote(json.dumps({"label": [f"{LABEL}={sandbox_id}"]}))
        return [n["Id"] for n in self.json("GET", f"/networks?filters={filters}")]

    def remove_volume(self, name: str) -> None:
        self.call("DELETE", f"/volumes/{quote(name)}?force=true", ok=(204, 404, 409))


# ---------------------------------------------------------------- the driver

def ask_serve(host: str, port: int, command: str, timeout: float) -> dict:
    """One command to a sandbox's ``serve`` through its gateway's control port."""
    with socket.create_connection((host, port), timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(command.encode() + b"\n")
        return json.loads(sock.makefile().readline() or "{}")


class SwarmSandbox(Sandbox):
    """A swarm sandbox's record. Its parts are processes on some node, so ``alive`` asks
    the sandbox's ``serve`` (which of its children run) instead of looking at pids; the
    toy backends are forked from one parent: alive while it is."""

    def alive(self, part: str) -> bool:
        try:
            children = ask_serve(self.host, self.ports["control"], "parts", timeout=2.0)
        except (OSError, ValueError, KeyError):
            return False
        if part in children:
            return bool(children[part])
        return part in self.backends and bool(children.get("backends"))

    def measure(self, kind: str = "rss") -> dict[str, int]:
        return {"total": 0}  # the engine charges the containers: SwarmDriver.measure

class SwarmDriver(ContainerDriver):
    """The swarm driver (see the module docstring); ``make_driver("swarm")``."""

    name = "swarm"

    def __init__(self, *args, constraints: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.dir = self.state_dir / "swarm"
        self.host_dir = self.dir  # the site's copy of configs; nodes get theirs by the seed
        self.engine = SwarmEngine(kwargs.get("docker_host"))
        limits = kwargs.get("limits")
        self.limits = (limits if isinstance(limits, SwarmLimits)
                       else SwarmLimits(**dataclasses.asdict(limits))
                       if isinstance(limits, Limits) else SwarmLimits())
        self.constraints = constraints_from_env() if constraints is None else constraints
        self.node_id = self.engine.local_node()
        # Listeners inside a sandbox: loopback while the swarm is one node on loopback
        # (then the node's address is the sandbox's record's host); otherwise every
        # interface of the sandbox's namespace (its own loopback and its lone overlay), as
        # a config placed for a sandbox on a node's address binds 0.0.0.0 (addresses.py).
        manager = self.engine.node(self.node_id)["Status"]["Addr"]
        self.listen_host = "127.0.0.1" if procs.is_loopback(manager) else "0.0.0.0"

    # -- start -----------------------------------------------------------------------------

    def _launch(self, sb: Sandbox) -> None:
        self._discard(sb, wait=True)  # a leftover of a crashed site, by the same name
        with self._lock():  # one more gateway port: control.sock, so the site restarts parts
            taken = {p for s in self.list() for p in s.ports.values()}
            sb.ports["control"] = self._allocate(["control"], taken)["control"]
            self._write(sb)
        # What a container sandbox finds in its directory (config, run spec; no logs yet)
        # and the command it runs, whatever the container driver makes them.
        seed = {"files": {p.name: p.read_text() for p in Path(sb.log_dir).iterdir()
                          if p.is_file() and p.suffix != ".log"}}
        command = containers.container_body(sb.id, Path(MOUNT), self.image, self.limits)["Cmd"]
        network = network_name(sb.id)
        self.engine.create_network(network_request(sb.id, network))
        self.engine.create_service(sandbox_service(sb.id, self.image, self.limits, seed,
                                                   self.constraints, network, command))
        task = self._placed(sb)
        address = self.engine.node(task["NodeID"])["Status"]["Addr"]
        moved = rehome(sb, address)
        for field in ("host", "proxy_url", "admin_url", "backends", "listeners"):
            setattr(sb, field, getattr(moved, field))
        with self._lock():
            self._write(sb)

    def _placed(self, sb: Sandbox) -> dict:
        """Wait for the manager to give the sandbox's task a node; the task, or why not.
        (The gateway can start there while the task's container starts.)"""
        deadline = time.monotonic() + self.start_timeout
        waiting_since = None
        while True:
            task = self.engine.task(container_name(sb.id))
            status = (task or {}).get("Status") or {}
            state = status.get("State")
            if task and task.get("NodeID") and state in COMING:
                return task
            if state in ENDED:
                self._save_logs(sb)
                raise SandboxStartError(sb.id, "service", f"its task is {state}: "
                                        f"{status.get('Err') or status.get('Message')}",
                                        Path(sb.log_dir) / "serve.log")
            if task and waiting_for_room(task):
                waiting_since = waiting_since or time.monotonic()
                if time.monotonic() - waiting_since > FULL_AFTER_S:
                    raise SandboxLimit(
                        f"no node of the swarm has room for another sandbox (the manager says: "
                        f"{status.get('Err')}); each takes {self.limits.reserve_memory_mb} MB "
                        f"and {self.limits.reserve_cpus:g} CPU reserved: add a node (docs/"
                        "deploy.md) or stop idle sandboxes")
            if time.monotonic() > deadline:
                raise SandboxStartError(sb.id, "service", f"its task is still {state or 'new'} "
                                        f"after {self.start_timeout:g}s: {status.get('Err') or ''}",
                                        Path(sb.log_dir) / "serve.log")
            time.sleep(0.1)

    def _wait_ready(self, sb: Sandbox, timeout: float) -> None:
        """Ready when every part answers through the gateway on the sandbox's node (its
        control socket is in a volume on that node, out of the site's reach)."""
        pending = ["proxy", *sb.backends]
        deadline = time.monotonic() + timeout
        last = ""
        while pending:
            running, why = self._state(sb)
            if not running:
                raise SandboxStartError(sb.id, "container", why, Path(sb.log_dir) / "serve.log")
            for part in list(pending):
                ok, last = self._probe(sb, part, 0.5)
                if ok:
                    pending.remove(part)
            if pending and time.monotonic() > deadline:
                raise SandboxStartError(sb.id, pending[0], f"not answering after {timeout:g}s: "
                                        f"{last}", Path(sb.log_dir) / f"{pending[0]}.log")
            if pending:
                time.sleep(0.03)

    def _gateway_alive(self, sb: Sandbox) -> bool:
        return self.engine.service(gateway_name(sb.id)) is not None

    def _ensure_gateway(self, sb: Sandbox) -> None:
        """The gateway service on the sandbox's node (the engine keeps it running there)."""
        if self._gateway_alive(sb):
            return
        task = self.engine.task(container_name(sb.id))
        if not task or not task.get("NodeID"):
            return
        # Checked, then made, without a lock: the site's look at the parts and a start can
        # both find it missing, and the second then finds it made (./lab cohort, 20
        # learners on swarm: "service lblab-sbgw-... already exists" failed a run's start).
        self.engine.create_service(gateway_service(sb.id, self.image, task["NodeID"], sb.host,
                                                   sb.ports), exist_ok=True)

    # -- look, reach -----------------------------------------------------------------------

    def _state(self, sb: Sandbox) -> tuple[bool, str]:
        """(running or about to, why not): its parts' probes say whether they answer."""
        task = self.engine.task(container_name(sb.id))
        if task is None:
            return False, f"service {container_name(sb.id)} is gone"
        status = task.get("Status") or {}
        if status.get("State") in COMING:
            return True, ""
        self._save_logs(sb)
        return False, (f"service {container_name(sb.id)}: its task is {status.get('State')}"
                       f" {status.get('Err') or ''}".rstrip())

    def _save_logs(self, sb: Sandbox) -> None:
        """What ``serve`` printed, where a start error points (serve.log of the record)."""
        text = self.engine.service_logs(container_name(sb.id))
        if text and Path(sb.log_dir).is_dir():
            (Path(sb.log_dir) / "serve.log").write_text(text)

    def _container(self, sb: Sandbox, service: str | None = None) -> str:
        """The container of the sandbox's task (or of another of its services): only
        this node's engine can enter or measure it."""
        task = self.engine.task(service or container_name(sb.id)) or {}
        if task.get("NodeID") != self.node_id:
            raise SandboxError(f"sandbox {sb.id} runs on another node ({sb.host}); only the "
                               "sandboxes on the site's node can be entered or measured from "
                               "here (use that node's engine)")
        cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not cid:
            raise SandboxError(f"sandbox {sb.id} has no running container")
        return cid

    def measure(self, sandbox_id: str, kind: str = "rss") -> dict[str, int]:
        """Memory of the sandbox's container and of its gateway's, and both ("total"):
        what one learner costs a node (``kind``: as ContainerDriver.measure)."""
        sb = self.get(sandbox_id)
        own = self.engine.memory_bytes(self._container(sb))
        gateway = self.engine.memory_bytes(self._container(sb, gateway_name(sb.id)))
        return {"total": own + gateway, "sandbox": own, "gateway": gateway}

    def control(self, sandbox_id: str, command: str, timeout: float = 15.0) -> dict:
        """One command to the sandbox's ``serve`` (restart NAME | parts), through the
        gateway's control port on the sandbox's node."""
        sb = self.get(sandbox_id)
        try:
            answer = ask_serve(sb.host, sb.ports["control"], command, timeout)
        except (OSError, ValueError) as exc:
            raise SandboxError(f"sandbox {sandbox_id}: its service does not answer "
                               f"({exc}); stop it and start it again") from None
        if "error" in answer:
            raise SandboxError(f"sandbox {sandbox_id}: {answer['error']}")
        return answer

    # -- records: SwarmSandbox, whose parts' liveness is asked of its serve ----------------

    def _read(self, sandbox_id: str) -> Sandbox | None:
        sb = super()._read(sandbox_id)
        return SwarmSandbox.from_json(sb.to_json()) if sb is not None else None

    def _record(self, *args, **kwargs) -> Sandbox:
        return SwarmSandbox.from_json(super()._record(*args, **kwargs).to_json())

    # -- stop ------------------------------------------------------------------------------

    def _discard(self, sb: Sandbox, wait: bool = True) -> None:
        for name in (gateway_name(sb.id), container_name(sb.id)):
            self.engine.remove_service(name)
        # The node's agent removes a removed service's containers seconds later; on this
        # node the driver does not wait for it. The volume lives on the node (only its
        # engine removes it: elsewhere an unmounted tmpfs name is left, no data); the
        # network is the swarm's, removable once no container of any node is attached.
        for cid in self.engine.containers_labelled(sb.id):
            self.engine.remove(cid)
        self.engine.remove_volume(volume_name(sb.id))
        # A removed overlay stays listed on the node for a moment: gone when not listed.
        deadline = time.monotonic() + (15 if wait else 0)
        while (networks := self.engine.networks_labelled(sb.id)):
            for net in networks:
                self.engine.remove_network(net)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)


# ---------------------------------------------------------------- inside: serve

def serve_from_seed(command: list[str], root: Path = Path(MOUNT)) -> None:
    """Write the seed's files into the sandbox's volume (a container sandbox finds them in
    its mounted directory), then become the container sandbox's own command."""
    seed = json.loads(os.environ.pop(SEED_ENV))
    (root / "sock").mkdir(exist_ok=True)
    for name, text in seed["files"].items():
        (root / name).write_text(text)
    os.execvp(command[0], command)


def measure_sandboxes(count: int, backends: int, state_dir: str | None = None,
                      settle_s: float = 3.0, ports: tuple[int, int] = (20000, 29999)) -> dict:
    """Start ``count`` sandboxes as services one at a time, then read each one's memory
    (its container's and its gateway's) once idle; stop them all. Run it on the manager,
    where the sandboxes of a single-node swarm land."""
    return containers.measure_sandboxes(count, backends, state_dir, settle_s,
                                        driver=functools.partial(SwarmDriver, port_range=ports))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.sandbox.swarm")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help=f"inside a sandbox service: write ${SEED_ENV}'s "
                           f"files to {MOUNT}, then exec COMMAND (a container sandbox's)")
    serve.add_argument("command", nargs=argparse.REMAINDER)
    measure = sub.add_parser("measure", help="start sandbox services one after another, print "
                             "their start time and idle memory as JSON, stop them")
    measure.add_argument("--count", type=int, default=3)
    measure.add_argument("--backends", type=int, default=4)
    measure.add_argument("--state-dir", default=None)
    measure.add_argument("--ports", default="20000-29999", help="the gateways' port range")
    opts = parser.parse_args(argv)
    if opts.cmd == "serve":
        command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
        serve_from_seed(command)
        return 0
    lo, _, hi = opts.ports.partition("-")
    print(json.dumps(measure_sandboxes(opts.count, opts.backends, opts.state_dir,
                                       ports=(int(lo), int(hi)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
