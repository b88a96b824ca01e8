"""Learners' sandboxes for the labs: one per learner, capped, reaped when idle.

Every lab run starts its learner's sandbox afresh (see labs/framework/runner.py) and leaves
it running afterwards, so the learner can look at it on the live dashboard
(/lab/<sandbox id>/). ``reap`` stops those idle for ``LBLAB_LABS_IDLE_S`` (default 600 s);
the site calls it before each run, ``manage.py labs reap`` from cron. The cap is the
SandboxService's ``max_sandboxes`` (``LBLAB_LABS_MAX_SANDBOXES``, default 30): a run that
would exceed it is refused with a message saying so.
"""
from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path

from django.conf import settings

from labs.framework import services
from labs.sandbox import SandboxService
from labs.sandbox.service import default_state_dir

PREFIX = "lab-"


def state_dir(override: str | None = None) -> Path:
    return Path(override or getattr(settings, "LBLAB_LABS_STATE_DIR", None) or default_state_dir())


def max_sandboxes() -> int:
    return int(getattr(settings, "LBLAB_LABS_MAX_SANDBOXES", 30))


def idle_seconds() -> float:
    return float(getattr(settings, "LBLAB_LABS_IDLE_S", 600))


def sandbox_id_for(learner_key: str) -> str:
    """A stable sandbox id per learner (their session key or user id, hashed)."""
    return PREFIX + hashlib.sha256(learner_key.encode()).hexdigest()[:12]


def service(override: str | None = None) -> SandboxService:
    return SandboxService(state_dir(override), max_sandboxes=max_sandboxes())


def reap(idle: float | None = None, everything: bool = False,
         override: str | None = None) -> list[str]:
    """Stop lab sandboxes (ids starting with lab-) unused for ``idle`` seconds."""
    svc = service(override)
    limit = idle_seconds() if idle is None else idle
    now = time.time()
    stopped = []
    for sb in svc.list():
        if not sb.id.startswith(PREFIX) or sb.pinned:
            continue
        dead = not any(sb.alive(p) for p in sb.part_names)
        if everything or dead or now - sb.last_used > limit:
            svc.stop(sb.id, grace=2.0)
            stopped.append(sb.id)
    if everything and services.stop_redis(svc.state_dir):
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
