"""Per client address, per period: how many new learner sessions and sandbox starts.

A cohort shares one machine; one address opening sessions or starting sandboxes in a loop
must not fill it. Each kind of event has a budget, ``N/period`` (settings
``LBLAB_RATE_SESSIONS`` and ``LBLAB_RATE_STARTS``, e.g. ``"20/hour"``; ``None``: no limit).
Over budget, ``hit`` raises ``TooMany`` (HTTP 429) saying what was refused and when the
oldest counted event leaves the window.

The counts are a sliding window of timestamps, one small JSON file per (kind, address)
under ``<state_dir>/rates/``, read-modify-written under an ``flock``: every web worker and
daphne process of the machine shares them, and nothing needs Redis. ``window`` is the
pure rule, tested alone.

The address comes from the request (``client_address``); the site's middleware puts the
current one in ``current_client`` so services deep in a call (a sandbox start) see it
without passing it through every signature. ``None`` (the CLI, a test) is never limited.
"""
from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import json
import os
import re
import time
from pathlib import Path

from django.conf import settings

from labs.problems import TooMany

current_client: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lblab_client", default=None)

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(second|minute|hour|day)s?\s*$")
WHAT = {"sessions": "new learner sessions", "starts": "sandbox starts"}


def parse(spec: str | None) -> tuple[int, float] | None:
    """``"20/hour"`` -> (20, 3600.0); ``"5/10 minutes"`` -> (5, 600.0); None -> None."""
    if spec is None or str(spec).strip().lower() in ("", "none", "off"):
        return None
    m = _SPEC.match(str(spec).lower())
    if not m:
        raise ValueError(f"rate {spec!r}: write N/period, e.g. 20/hour or 5/10 minutes")
    return int(m.group(1)), float(int(m.group(2) or 1) * PERIODS[m.group(3)])


def window(stamps: list[float], now: float, limit: int, period: float) -> tuple[bool, list[float], float]:
    """(allowed, stamps to keep, seconds until the next is allowed) for one more event."""
    kept = [t for t in stamps if now - t < period]
    if len(kept) >= limit:
        return False, kept, max(0.0, kept[-limit] + period - now)
    return True, [*kept, now], 0.0


def client_address(request) -> str:
    """The client's address; behind LBLab's front door, the one it saw (X-Forwarded-For's
    last hop, only when LBLAB_TRUST_FORWARDED is on: anyone can send that header)."""
    if getattr(settings, "LBLAB_TRUST_FORWARDED", False):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR") or "unknown"


def _dir() -> Path:
    from labs.services.sandboxes import state_dir

    return state_dir() / "rates"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def hit(kind: str, client: str | None, spec: str | None = None, now: float | None = None) -> None:
    """Count one ``kind`` event for ``client``; TooMany when over the budget."""
    rule = parse(spec if spec is not None else
                 getattr(settings, f"LBLAB_RATE_{kind.upper()}", None))
    if rule is None or not client:
        return
    limit, period = rule
    now = time.time() if now is None else now
    name = hashlib.sha256(f"{kind}:{client}".encode()).hexdigest()[:24]
    with _locked(_dir() / f"{name}.json") as fh:
        try:
            stamps = [float(t) for t in json.loads(fh.read() or "[]")]
        except (ValueError, TypeError):
            stamps = []  # a damaged counter: start it again rather than lock everyone out
        ok, kept, wait = window(stamps, now, limit, period)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(kept))
        fh.flush()
        os.fsync(fh.fileno())
    if not ok:
        seconds = max(1, int(wait + 0.999))
        raise TooMany(f"Too many {WHAT.get(kind, kind)} from your address ({client}): at most "
                      f"{limit} per {_period_text(period)}. Try again in {_wait_text(seconds)}.",
                      retry_after=seconds)


def check_start(client: str | None = None) -> None:
    hit("starts", client or current_client.get())


def check_session(client: str | None = None) -> None:
    hit("sessions", client or current_client.get())


def _period_text(seconds: float) -> str:
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = int(seconds // size)
            return name if n == 1 else f"{n} {name}s"
    return f"{seconds:g} seconds"


def _wait_text(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math_ceil(seconds / 60)} minutes"


def math_ceil(x: float) -> int:
    return int(x) + (0 if x == int(x) else 1)
