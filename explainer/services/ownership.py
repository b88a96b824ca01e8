"""Who may see or change a sandbox: the one check every view, API and socket makes.

Rules, in order (first match wins):

1. The shared default sandbox (``LBLAB_SANDBOX``, the dashboard at ``/``): anyone may
   watch it; who may change it is ``LBLAB_DEFAULT_SANDBOX_WRITERS``: ``"anyone"`` (the
   local single-learner default: the operator is whoever sits at the laptop), ``"staff"``
   (the public-mode default: logged-in staff only, nobody anonymous) or ``"nobody"``.
2. The learner's own sandbox: its id is derived from their learner key
   (labs.services.sandboxes.owns), so only that session (or user) matches.
3. An instructor, for the sandboxes of learners in a workshop they run (superusers for
   every one: they operate the site).
4. Anyone else gets 404, the same answer as for a sandbox that does not exist, so ids
   cannot be probed.

The key is only *read* here: a visitor without a session owns nothing (asking does not
create a session). ``Access`` is what a page needs to know (may it show the controls).
Views use ``sandbox_view`` (explainer/views.py), the socket uses ``scope_access``.
"""
from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from types import SimpleNamespace

from django.conf import settings
from django.http import Http404

from labs.problems import Problem
from labs.services import sandboxes as learner_sandboxes


@dataclass(frozen=True)
class Access:
    sandbox_id: str
    read: bool
    write: bool
    why: str  # "default", "owner", "instructor", "operator", "none"


NONE_MESSAGE = "no such sandbox"


def _existing_key(user, session) -> str | None:
    """The learner key of this visitor, if they have one already (never creates one)."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"u:{user.pk}"
    key = getattr(session, "session_key", None)
    return f"s:{key}" if key else None


def _instructs(user, sandbox_id: str) -> bool:
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    from explainer.workshops.models import Participant
    from explainer.workshops.services.sandboxes import candidate_ids

    participants = Participant.objects.filter(workshop__instructor=user).only(
        "learner_key", "sandbox_id")
    return any(sandbox_id == p.sandbox_id or sandbox_id in candidate_ids(p)
               for p in participants)


def default_writers() -> str:
    return getattr(settings, "LBLAB_DEFAULT_SANDBOX_WRITERS", "anyone")


def access(user, session, sandbox_id: str) -> Access:
    """What this visitor may do with this sandbox (sync: may read the session and the DB)."""
    staff = bool(user is not None and getattr(user, "is_authenticated", False)
                 and (user.is_staff or user.is_superuser))
    if sandbox_id == settings.LBLAB_SANDBOX:
        rule = default_writers()
        write = rule == "anyone" or (rule == "staff" and staff)
        return Access(sandbox_id, True, write, "default")
    if learner_sandboxes.owns(_existing_key(user, session), sandbox_id):
        return Access(sandbox_id, True, True, "owner")
    if user is not None and getattr(user, "is_superuser", False):
        return Access(sandbox_id, True, True, "operator")
    if _instructs(user, sandbox_id):
        return Access(sandbox_id, True, True, "instructor")
    return Access(sandbox_id, False, False, "none")


def request_access(request, sandbox_id: str) -> Access:
    return access(getattr(request, "user", None), getattr(request, "session", None), sandbox_id)


def scope_access(scope: dict, sandbox_id: str) -> Access:
    """The same check for a WebSocket (the session and user AuthMiddlewareStack put there)."""
    return access(scope.get("user"), scope.get("session") or SimpleNamespace(session_key=None),
                  sandbox_id)


def require(request, sandbox_id: str, write: bool = False) -> Access:
    """404 unless the visitor may see it; a 403 Problem if they may only watch it."""
    found = request_access(request, sandbox_id)
    if not found.read:
        raise Http404(NONE_MESSAGE)
    if write and not found.write:
        raise Problem("This shared sandbox is read-only for visitors: watch it here, and use "
                      "your own sandbox (start one from a lesson, a lab or a workshop) to "
                      "change things.", status=403, path="sandbox")
    return found


def sandbox_view(write: bool = False):
    """Decorator for views taking ``sandbox``: checks access before the view runs."""
    def wrap(view):
        if asyncio.iscoroutinefunction(view):
            from asgiref.sync import sync_to_async

            @functools.wraps(view)
            async def async_wrapper(request, sandbox: str, *args, **kwargs):
                await sync_to_async(require)(request, sandbox, write)
                return await view(request, sandbox, *args, **kwargs)
            return async_wrapper

        @functools.wraps(view)
        def wrapper(request, sandbox: str, *args, **kwargs):
            require(request, sandbox, write)
            return view(request, sandbox, *args, **kwargs)
        return wrapper
    return wrap
