"""The seam between the learner-sandbox service and what runs a sandbox.

The learner-sandbox service (labs/services/sandboxes.py) decides *whose* sandbox, *whether*
(limits, rates, the cap) and *what* (backends, config); a driver decides *how*: local
processes (``SandboxService``, service.py), one container per sandbox on a Docker engine
(labs/sandbox/containers.py), or one Swarm service per sandbox placed on any node of a
swarm with room (labs/sandbox/swarm.py). A driver is any object with the methods of ``Driver``
below, returning ``Sandbox`` records (service.py) whose URLs the site can reach; it raises
the errors of service.py (SandboxNotFound, SandboxExists, SandboxLimit, PortInUse,
SandboxStartError), which are ``Problem``s with a message that says what to change.
A graded lab run uses the same driver as the site (labs/framework/runner.py,
``RunOptions.driver``), so the protocol also has what a run does to a sandbox: kill a
part, start its proxy again, each part's state for the run's watchdog, its memory.

``make_driver(name, **options)`` builds one by name; options every driver accepts:
``state_dir``, ``host``, ``max_sandboxes``, ``port_range``, ``limits`` (sandbox OS limits,
limits.py). A new driver registers itself in ``DRIVERS`` as ``"module:Class"`` (imported
lazily, so the process driver never imports a container client).
"""
from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from labs.sandbox.service import Sandbox, SandboxError


@runtime_checkable
class Driver(Protocol):
    """What the learner-sandbox service needs from whatever runs sandboxes."""

    name: str  # its key in DRIVERS: what a run record says it ran on
    max_sandboxes: int

    def create(self, sandbox_id: str | None = None, backends: int | list[str] = 4,
               config: dict | None = None, ports: dict | None = None, wait: bool = True, *,
               pinned: bool = False, timeout: float | None = None,
               redis_url: str | None = None, owner: str = "") -> Sandbox: ...

    def get(self, sandbox_id: str) -> Sandbox: ...

    def list(self) -> list[Sandbox]: ...

    def parts(self, sandbox_id: str) -> dict[str, dict]: ...

    def restart_part(self, sandbox_id: str, part: str, wait: bool = True) -> Sandbox: ...

    def restart_backend(self, sandbox_id: str, name: str, wait: bool = True) -> Sandbox: ...

    def touch(self, sandbox_id: str) -> Sandbox: ...

    def stop(self, sandbox_id: str, grace: float = 5.0, keep_logs: bool = False,
             created_at: float | None = None) -> None:
        """Stop it and forget it; with ``created_at``, only if the id still names the
        sandbox created then (a caller that judged a record idle or dead passes its time)."""

    def reap_idle(self, max_idle_s: float) -> list[str]: ...

    # What a graded lab run (labs/framework/runner.py) needs beyond the site's calls.

    def restart_proxy(self, sandbox_id: str, wait: bool = True,
                      part: str = "proxy") -> Sandbox: ...

    def kill_part(self, sandbox_id: str, part: str) -> None:
        """SIGKILL one part (a crash fault); it stays down until restarted."""

    def part_states(self, sandbox_id: str) -> dict[str, "tuple[int | None, bool]"]:
        """{part: (id, running)} for every part, in one look: the id (a pid, in whatever
        PID namespace the part runs) changes when the part is started again, so the run's
        watchdog (labs/framework/watchdog.py) tells a death from a planned restart."""

    def measure(self, sandbox_id: str, kind: str = "rss") -> dict[str, int]:
        """Memory in bytes: per part where the driver can tell, and "total"."""


DRIVERS = {
    "processes": "labs.sandbox.service:SandboxService",
    "containers": "labs.sandbox.containers:ContainerDriver",
    "swarm": "labs.sandbox.swarm:SwarmDriver",
}


def make_driver(name: str = "processes", **options) -> Driver:
    try:
        target = DRIVERS[name]
    except KeyError:
        raise SandboxError(f"LBLAB_SANDBOX_DRIVER={name!r}: choose one of "
                           f"{', '.join(DRIVERS)}") from None
    module, _, cls = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise SandboxError(f"the {name} sandbox driver ({target}) cannot be loaded: {exc}",
                           status=503) from None
    return factory(**options)
