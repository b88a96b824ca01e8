"""OS limits for a sandbox's processes: memory, CPU share, open files, process count.

One learner's runaway traffic must not starve another's lab run, so each sandbox's
processes are bounded by the kernel, not by politeness:

- cgroups, when this process may create them (v2: the unified hierarchy with the memory,
  cpu and pids controllers enabled for our subtree; v1: the memory, cpu and pids
  hierarchies mounted writable). A sandbox gets ``lblab-<id>`` *below the cgroup we run
  in* (so whatever bounds us still bounds it): ``memory.max``/``memory.limit_in_bytes``
  for the whole sandbox, ``cpu.weight``/``cpu.shares`` for its share when the CPU is
  busy, ``pids.max`` for its process count. Processes are moved in right after they start
  (before they fork: a backend forks its siblings only once its imports are done).
- rlimits otherwise (``prlimit`` on the started pid, inherited by what it forks):
  ``RLIMIT_NOFILE`` for open files and ``RLIMIT_AS`` per process for memory; the CPU
  share becomes a nice value. A process count has no per-sandbox rlimit (``RLIMIT_NPROC``
  counts every process of the user), so it is only enforced with cgroups.

Open files are limited by rlimit in both modes (cgroups have no such knob).
``Limits.from_setting`` reads ``LBLAB_SANDBOX_LIMITS`` (a dict, or None for no limits).
"""
from __future__ import annotations

import logging
import os
import resource
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("labs.sandbox")

CGROUP_ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "pids")


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 256  # the whole sandbox (cgroups); per process with rlimits
    cpu_weight: int = 100  # 1-10000, cgroup v2's scale (100: an equal share)
    open_files: int = 1024  # per process
    processes: int = 64  # the whole sandbox (cgroups only)
    cgroups: str = "auto"  # auto | off

    @classmethod
    def from_setting(cls, spec) -> "Limits | None":
        if spec is None or spec is False:
            return None
        if isinstance(spec, Limits):
            return spec
        known = set(cls.__dataclass_fields__)
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"LBLAB_SANDBOX_LIMITS: unknown key(s) {', '.join(sorted(unknown))}; "
                             f"use {', '.join(sorted(known))}")
        return cls(**spec)

    @classmethod
    def from_env(cls, environ=None) -> "Limits | None":
        """The limits the environment asks for (the names lblab/settings.py documents):
        LBLAB_SANDBOX_MEMORY_MB, _CPU_WEIGHT, _OPEN_FILES, _PROCESSES; None when
        LBLAB_SANDBOX_NO_LIMITS is 1 (so the site and a lab run's own process agree)."""
        env = os.environ if environ is None else environ
        if env.get("LBLAB_SANDBOX_NO_LIMITS", "").strip().lower() in ("1", "true", "yes", "on"):
            return None
        try:
            return cls(memory_mb=int(env.get("LBLAB_SANDBOX_MEMORY_MB", "512")),
                       cpu_weight=int(env.get("LBLAB_SANDBOX_CPU_WEIGHT", "100")),
                       open_files=int(env.get("LBLAB_SANDBOX_OPEN_FILES", "1024")),
                       processes=int(env.get("LBLAB_SANDBOX_PROCESSES", "64")))
        except ValueError as exc:
            raise ValueError(f"LBLAB_SANDBOX_*: give whole numbers ({exc})") from None

    # -- where -----------------------------------------------------------------------------

    def mode(self) -> str:
        """"v2", "v1" or "rlimit": how this machine can bound a sandbox."""
        if self.cgroups == "off":
            return "rlimit"
        v2 = _own_v2_dir()
        if v2 is not None and {"memory", "pids"} <= _v2_subtree(v2) and os.access(v2, os.W_OK):
            return "v2"
        if all(_own_v1_dir(c) is not None and os.access(_own_v1_dir(c), os.W_OK)
               for c in V1_CONTROLLERS):
            return "v1"
        return "rlimit"

    def cgroup_dirs(self, sandbox_id: str) -> list[Path]:
        mode = self.mode()
        name = f"lblab-{sandbox_id}"
        if mode == "v2":
            return [_own_v2_dir() / name]
        if mode == "v1":
            return [_own_v1_dir(c) / name for c in V1_CONTROLLERS]
        return []

    # -- apply -----------------------------------------------------------------------------

    def apply(self, pid: int, sandbox_id: str) -> str:
        """Bound process ``pid`` (a part of sandbox ``sandbox_id``); returns the mode used."""
        self._rlimits(pid, per_process_memory=False)
        mode = self.mode()
        try:
            if mode == "v2":
                self._v2(pid, sandbox_id)
            elif mode == "v1":
                self._v1(pid, sandbox_id)
        except OSError as exc:  # e.g. a controller we may not use after all: say so, go on
            log.warning("sandbox %s: cgroup limits not applied (%s); using rlimits", sandbox_id, exc)
            mode = "rlimit"
        if mode == "rlimit":
            self._rlimits(pid, per_process_memory=True)
            try:
                os.setpriority(os.PRIO_PROCESS, pid, max(0, min(19, 10 - self.cpu_weight // 20)))
            except OSError as exc:
                log.warning("sandbox %s: could not lower pid %s's priority (%s)", sandbox_id, pid, exc)
        return mode

    def _rlimits(self, pid: int, per_process_memory: bool) -> None:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (self.open_files, self.open_files))
        if per_process_memory:
            # Address space, not resident memory: an asyncio Python maps ~2-3x what it uses.
            limit = self.memory_mb * 4 * 1024 * 1024
            resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))

    def _v2(self, pid: int, sandbox_id: str) -> None:
        (group,) = self.cgroup_dirs(sandbox_id)
        group.mkdir(exist_ok=True)
        _write(group / "memory.max", str(self.memory_mb * 1024 * 1024))
        _write(group / "pids.max", str(self.processes))
        if (group / "cpu.weight").exists():
            _write(group / "cpu.weight", str(max(1, min(10000, self.cpu_weight))))
        _write(group / "cgroup.procs", str(pid))

    def _v1(self, pid: int, sandbox_id: str) -> None:
        memory, cpu, pids = self.cgroup_dirs(sandbox_id)
        for group in (memory, cpu, pids):
            group.mkdir(exist_ok=True)
        _write(memory / "memory.limit_in_bytes", str(self.memory_mb * 1024 * 1024))
        _write(cpu / "cpu.shares", str(max(2, self.cpu_weight * 1024 // 100)))
        _write(pids / "pids.max", str(self.processes))
        for group in (memory, cpu, pids):
            _write(group / "cgroup.procs", str(pid))

    def release(self, sandbox_id: str) -> None:
        release(sandbox_id)


def release(sandbox_id: str) -> None:
    """Remove the sandbox's cgroups, if any, once its processes are gone (whichever
    service started them: a part restarted by the site may have been bounded by it)."""
    name = f"lblab-{sandbox_id}"
    candidates = [d / name for d in (_own_v2_dir(), *(_own_v1_dir(c) for c in V1_CONTROLLERS))
                  if d is not None]
    for group in candidates:
        try:
            group.rmdir()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            log.warning("sandbox %s: cgroup %s not removed (%s)", sandbox_id, group, exc)


def cgroup_of(pid: int) -> dict[str, str]:
    """{controller (or "" for v2): path} of a process, from /proc/<pid>/cgroup."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in (controllers.split(",") if controllers else [""]):
            out[c] = path
    return out


def _own_v2_dir() -> Path | None:
    path = cgroup_of(os.getpid()).get("")
    for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if path is not None and (base / "cgroup.controllers").exists():
            return base / path.lstrip("/")
    return None


def _v2_subtree(group: Path) -> set[str]:
    try:
        return set((group / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


def _own_v1_dir(controller: str) -> Path | None:
    path = cgroup_of(os.getpid()).get(controller)
    base = CGROUP_ROOT / controller
    if path is None or not (base / "cgroup.procs").exists():
        return None
    return base / path.lstrip("/")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


__all__ = ["Limits", "cgroup_of"]
