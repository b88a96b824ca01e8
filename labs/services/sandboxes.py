"""The learner-sandbox service: every part of the site reaches learners' sandboxes here.

One sandbox per learner, the same one for the course, the graded labs, a workshop and the
dashboard: its id is derived from the learner key (``sandbox_id_for``), so the key *is*
the proof of ownership (``owns``) and the record also names its ``owner``. What this
module decides, once for every caller:

- placement: which driver runs sandboxes (``LBLAB_SANDBOX_DRIVER``: local processes today,
  containers later; labs/sandbox/drivers.py is the seam), where its state lives
  (``LBLAB_LABS_STATE_DIR``), which ports it may use (``LBLAB_SANDBOX_PORTS``) and the OS
  limits each sandbox's processes get (``LBLAB_SANDBOX_LIMITS``, labs/sandbox/limits.py);
- ownership: ``owns(learner_key, sandbox_id)``; the site's one check on top of it (the
  shared default sandbox, instructors) is explainer/services/ownership.py;
- limits: the cap (``LBLAB_LABS_MAX_SANDBOXES``, a clear ``LabFull`` saying when to come
  back) and the per-address start rate (labs/services/rates.py);
- ``ensure``: reuse the learner's sandbox when it fits, else start it (again);
- ``restart``: start a dead proxy or toy backend again;
- ``reap``: stop those idle for ``LBLAB_LABS_IDLE_S`` (default 600 s) or whose processes
  all died; the site calls it before each start, ``manage.py labs reap`` from cron.

Errors are ``Problem``s (labs/problems.py) a view renders as they are.
"""
from __future__ import annotations

import hashlib
import math
import statistics
import time
from pathlib import Path
from typing import Callable

from django.conf import settings

from labs.problems import LabFull, Problem
from labs.sandbox.drivers import Driver, make_driver
from labs.sandbox.service import (DEFAULT_PORT_RANGE, Sandbox, SandboxError, SandboxExists,
                                  SandboxLimit, SandboxNotFound, SandboxStartError,
                                  default_state_dir)

PREFIX = "lab-"
STARTING_GRACE_S = 120.0  # a sandbox "starting" for longer than this is stuck: reapable


def state_dir(override: str | None = None) -> Path:
    return Path(override or getattr(settings, "LBLAB_LABS_STATE_DIR", None) or default_state_dir())


def max_sandboxes() -> int:
    return int(getattr(settings, "LBLAB_LABS_MAX_SANDBOXES", 30))


def idle_seconds() -> float:
    return float(getattr(settings, "LBLAB_LABS_IDLE_S", 600))


def port_range() -> tuple[int, int]:
    return tuple(getattr(settings, "LBLAB_SANDBOX_PORTS", DEFAULT_PORT_RANGE))


def os_limits():
    """The OS limits every learner sandbox's processes get (None: none)."""
    from labs.sandbox.limits import Limits

    spec = getattr(settings, "LBLAB_SANDBOX_LIMITS", None)
    return Limits.from_setting(spec) if spec is not None else None


def sandbox_id_for(learner_key: str) -> str:
    """A stable sandbox id per learner (their session key or user id, hashed)."""
    return PREFIX + hashlib.sha256(learner_key.encode()).hexdigest()[:12]


def owns(learner_key: str | None, sandbox_id: str) -> bool:
    """This learner's own sandbox (the id is derived from the key; nobody else's matches)."""
    return bool(learner_key) and sandbox_id == sandbox_id_for(learner_key)


def driver_name() -> str:
    """The driver the site places sandboxes with (LBLAB_SANDBOX_DRIVER)."""
    return getattr(settings, "LBLAB_SANDBOX_DRIVER", "processes")


def lab_fallback() -> str:
    """A graded lab the site's driver cannot serve (labs/framework/placement.py): run it
    on processes ("processes", the default) or refuse it ("refuse"): LBLAB_LABS_FALLBACK."""
    return getattr(settings, "LBLAB_LABS_FALLBACK", "processes")


def service(override: str | None = None, driver: str | None = None) -> Driver:
    """The driver, set up from the settings (every caller gets the same placement);
    ``driver``: another one by name, with the same settings."""
    options = {"state_dir": state_dir(override), "max_sandboxes": max_sandboxes(),
               "port_range": port_range()}
    limits = os_limits()
    if limits is not None:
        options["limits"] = limits
    return make_driver(driver or driver_name(), **options)


# ---------------------------------------------------------------- the cap

def minutes_until_free(svc: Driver, now: float | None = None) -> int:
    """When the idle reaper frees the first slot, in whole minutes (at least 1)."""
    now = time.time() if now is None else now
    idle = idle_seconds()
    waits = [sb.last_used + idle - now for sb in svc.list() if not sb.pinned]
    return max(1, math.ceil(min(waits, default=idle) / 60))


def full(svc: Driver) -> LabFull:
    minutes = minutes_until_free(svc)
    return LabFull(f"The lab is full: {svc.max_sandboxes} sandboxes are running, the most "
                   f"this machine allows. Try again in about {minutes} minute"
                   f"{'s' if minutes != 1 else ''}: idle sandboxes are stopped after "
                   f"{round(idle_seconds() / 60)} minutes.", retry_after=minutes * 60)


# ---------------------------------------------------------------- start, reuse, restart

def find(learner_key: str) -> Sandbox | None:
    try:
        return service().get(sandbox_id_for(learner_key))
    except SandboxNotFound:
        return None


def ensure(learner_key: str, *, backends: int | list[str] = 4, config: dict | None = None,
           reuse: Callable[[Sandbox], bool] | None = None,
           client: str | None = None) -> tuple[Sandbox, bool]:
    """The learner's running sandbox, started (or started again) when needed.

    ``reuse(sb)`` says whether a running one fits (default: its proxy runs). Returns
    (sandbox, started). A start counts against the client address's rate (rates.py) and
    the cap; both are refused with a Problem saying when to try again."""
    from labs.services import rates

    svc = service()
    sid = sandbox_id_for(learner_key)
    try:
        sb = svc.get(sid)
    except SandboxNotFound:
        sb = None
    if sb is not None and sb.status == "starting" and time.time() - sb.created_at < 30:
        raise Problem("your sandbox is starting; try again in a few seconds", status=409)
    fits = reuse or (lambda s: s.status == "running" and s.alive("proxy"))
    if sb is not None and fits(sb):
        svc.touch(sid)
        return sb, False
    rates.check_start(client)
    if sb is not None:
        try:
            svc.stop(sid, grace=2.0, created_at=sb.created_at)  # the one judged, no newer
        except SandboxNotFound:
            pass
    reap()
    try:
        return svc.create(sid, backends=backends, config=config, owner=learner_key), True
    except SandboxLimit:
        raise full(svc) from None
    except SandboxExists:
        return svc.get(sid), False
    except SandboxStartError as exc:
        raise Problem(f"your sandbox did not start: {exc.part} {exc.reason}. Try again; if it "
                      "keeps failing, tell whoever runs this site", status=502) from None
    except SandboxError as exc:
        raise Problem(f"your sandbox did not start: {str(exc).splitlines()[0]}",
                      status=502) from None


def restart(sandbox_id: str, part: str) -> Sandbox:
    """Start a dead (or stuck) proxy or toy backend of the sandbox again."""
    svc = service()
    sb = svc.get(sandbox_id)
    if part != "proxy" and part not in sb.backends:
        raise Problem(f"sandbox {sandbox_id} has no backend {part!r}; its parts are "
                      f"{', '.join(sb.part_names)}", status=409, path="backend")
    return svc.restart_part(sandbox_id, part)


def reap(idle: float | None = None, everything: bool = False,
         override: str | None = None) -> list[str]:
    """Stop lab sandboxes (ids starting with lab-) unused for ``idle`` seconds."""
    from labs.framework import services

    svc = service(override)
    limit = idle_seconds() if idle is None else idle
    now = time.time()
    stopped = []
    for sb in svc.list():
        if not sb.id.startswith(PREFIX) or sb.pinned:
            continue
        if not everything and sb.status == "starting" and now - sb.created_at < STARTING_GRACE_S:
            # Another request is starting it right now: its parts have no pids yet, which
            # is not dead (./lab cohort saw learners' starts killed by a neighbour's reap).
            continue
        dead = not any(sb.alive(p) for p in sb.part_names)
        if everything or dead or now - sb.last_used > limit:
            try:
                # The sandbox judged here, not whatever holds its id by now: a learner's
                # graded run stops theirs and starts it afresh under the same id.
                svc.stop(sb.id, grace=2.0, created_at=None if everything else sb.created_at)
            except SandboxNotFound:  # another process reaped it first
                continue
            stopped.append(sb.id)
    if everything and services.stop_redis(state_dir(override)):
        stopped.append("labs-redis")
    return stopped


def measure_sandbox(backends: int = 4, repeat: int = 3, override: str | None = None) -> dict:
    """Start (and stop) ``repeat`` sandboxes one after another; memory and start time."""
    svc = service(override)
    starts, pss, rss, parts = [], [], [], {}
    for i in range(repeat):
        sid = f"{PREFIX}measure-{i}"
        started = time.monotonic()
        sb = svc.create(sid, backends=backends)
        wall = time.monotonic() - started
        time.sleep(0.5)  # let the first health checks run, as in a lab
        p, r = sb.measure("pss"), sb.measure("rss")
        starts.append(sb.start_seconds or wall)
        pss.append(p["total"])
        rss.append(r["total"])
        parts = {k: v for k, v in p.items() if k != "total"}
        svc.stop(sid, grace=2.0)
    return {"backends": backends, "runs": repeat,
            "start_seconds": {"median": round(statistics.median(starts), 3),
                              "max": round(max(starts), 3)},
            "pss_mb": {"median": round(statistics.median(pss) / 1e6, 1),
                       "max": round(max(pss) / 1e6, 1)},
            "rss_mb": {"median": round(statistics.median(rss) / 1e6, 1)},
            "pss_mb_per_part": {k: round(v / 1e6, 1) for k, v in parts.items()},
            "goals": {"memory_mb": 100, "start_seconds": 2.0}}
