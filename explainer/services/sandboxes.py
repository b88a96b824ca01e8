"""Which proxy and toy backends a sandbox id means, for the site's pages and sockets.

Sandboxes themselves (placement, limits, restart, reaping) belong to the learner-sandbox
service, labs/services/sandboxes.py; who may see or change one is
explainer/services/ownership.py. This module turns an id into the URLs the views call.

A sandbox normally comes from `labs.sandbox.SandboxService` (which starts and
records them). For a proxy someone started by hand, LBLAB_ADMIN_URL (with
LBLAB_SANDBOX naming it) points the site at it directly: then the toy
backends' control URLs are read from the proxy's own state (a toy backend
serves /_control on the port it serves traffic on), and the verbs that need
a supervisor (restart a backend, part status, traffic) say they need one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.conf import settings
from labs.problems import Problem

SANDBOX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class SandboxError(Problem):
    """The sandbox cannot be found or used; the message says what to do."""

    status = 404

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message, status=status, path="sandbox")


@dataclass(frozen=True)
class SandboxRef:
    id: str
    admin_url: str
    proxy_url: str | None = None
    backends: dict[str, str] = field(default_factory=dict)  # name -> toy backend base URL
    managed: bool = False  # True when SandboxService supervises it
    handle: object | None = field(default=None, compare=False, repr=False)


def group_name(sandbox_id: str) -> str:
    """The Channels group a sandbox's ticks go to."""
    return f"sandbox.{sandbox_id}"


def check_id(sandbox_id: str) -> str:
    if not SANDBOX_ID.match(sandbox_id or ""):
        raise SandboxError(f"{sandbox_id!r} is not a sandbox id: use letters, digits, '-' "
                           "and '_' (up to 63)", status=400)
    return sandbox_id


def service():
    """The learner-sandbox service's driver (labs/services/sandboxes.py): one placement
    for the dashboard, the course, the labs and the workshops."""
    from labs.services import sandboxes as learner_sandboxes

    return learner_sandboxes.service()


def get_sandbox(sandbox_id: str) -> SandboxRef:
    check_id(sandbox_id)
    if settings.LBLAB_ADMIN_URL and sandbox_id == settings.LBLAB_SANDBOX:
        return SandboxRef(id=sandbox_id, admin_url=settings.LBLAB_ADMIN_URL,
                          proxy_url=settings.LBLAB_PROXY_URL or None)
    svc = service()
    try:
        sb = svc.get(sandbox_id)
    except (KeyError, LookupError, FileNotFoundError) as exc:
        raise SandboxError(f"no sandbox {sandbox_id!r} is running; start it with the "
                           "launcher, or create it from the labs page") from None
    if sb is None:
        raise SandboxError(f"no sandbox {sandbox_id!r} is running; start it with the launcher, "
                           "or create it from the labs page")
    return SandboxRef(id=sb.id, admin_url=str(sb.admin_url).rstrip("/"),
                      proxy_url=getattr(sb, "proxy_url", None),
                      backends=dict(getattr(sb, "backends", {}) or {}),
                      managed=True, handle=sb)


def backend_url(sandbox: SandboxRef, name: str, state: dict | None = None) -> str:
    """Base URL of a toy backend's control API: the sandbox's record, else its address."""
    if name in sandbox.backends:
        return str(sandbox.backends[name]).rstrip("/")
    for pool in ((state or {}).get("pools") or {}).values():
        for backend in pool.get("backends") or []:
            if backend.get("name") == name:
                return f"http://{backend['address']}"
    raise SandboxError(f"no toy backend named {name!r} in sandbox {sandbox.id!r}")


_touched: dict[str, float] = {}


def parts_of(sandbox_id: str, touch_every_s: float = 30.0) -> dict | None:
    """{part: {"alive", "detail"}} for a supervised sandbox, None for one started by hand.

    Watching a sandbox counts as using it: it is touched now and then so the idle
    reaper leaves it alone while a page shows it.
    """
    import time

    try:
        ref = get_sandbox(sandbox_id)
    except SandboxError:
        return None
    if not ref.managed:
        return None
    svc = service()
    now = time.monotonic()
    if now - _touched.get(sandbox_id, float("-inf")) >= touch_every_s:
        _touched[sandbox_id] = now
        svc.touch(sandbox_id)
    return svc.parts(sandbox_id)
