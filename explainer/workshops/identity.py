"""Who a learner is, without an account: their session, or their user when logged in.

The workshop, the labs and the course must agree on this key: a workshop's cockpit finds
a learner's lab and lesson progress by it, and a learner's sandbox id is derived from it.
The shared helper is ``explainer.learners.learner_key`` (``user:<pk>`` or
``session:<session key>``); this module uses it, with the same rule as a fallback.

The labs may spell the same learner differently (``u:<pk>`` / ``s:<session key>``). So
that a workshop still finds a learner's lab progress and lab sandbox, `variants` lists
both spellings of a key and `labs_key` asks the labs' own helper how it spells this one.
"""
from __future__ import annotations

import importlib
import logging
from types import SimpleNamespace

log = logging.getLogger("explainer.workshops")

# Where the shared helper lives (first found wins).
SHARED = ("explainer.learners", "labs.identity", "labs.learners")
# Spellings of the same learner: long form <-> short form.
ALIASES = {"session": "s", "s": "session", "user": "u", "u": "user"}


def _shared():
    for name in SHARED:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        fn = getattr(module, "learner_key", None)
        if callable(fn):
            return fn
    return None


def own_learner_key(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    session = request.session
    if not session.session_key:
        session.save()
    return f"session:{session.session_key}"


def learner_key(request) -> str:
    fn = _shared()
    return fn(request) if fn is not None else own_learner_key(request)


def variants(key: str) -> list[str]:
    """The key and its other spelling (``session:X`` <-> ``s:X``, ``user:N`` <-> ``u:N``)."""
    kind, sep, rest = key.partition(":")
    alt = ALIASES.get(kind)
    return [key, f"{alt}:{rest}"] if sep and rest and alt else [key]


def labs_key(key: str) -> str:
    """The key the labs store this learner's runs and sandbox under.

    Asks the labs' own `learner_key` with a request-shaped object that carries only what
    the key was made of (the session key or the user id), so the answer is the labs'
    spelling whatever it is."""
    try:
        from labs.services.runs import learner_key as labs_learner_key
    except ImportError:
        return key
    kind, _, rest = key.partition(":")
    if kind in ("user", "u"):
        user = SimpleNamespace(is_authenticated=True, pk=rest)
    else:
        user = SimpleNamespace(is_authenticated=False, pk=None)
    session = SimpleNamespace(session_key=rest, save=lambda: None)
    try:
        answer = labs_learner_key(SimpleNamespace(user=user, session=session))
    except Exception as exc:  # their helper changed shape: keep ours, and say so in the log
        log.warning("labs.services.runs.learner_key refused a plain request (%s); using %s",
                    exc, key)
        return key
    return answer if isinstance(answer, str) and answer else key


# WebSockets do not recompute the key: an HTTP view that checked `learner_key` records the
# participant ids in the session, and the learner's consumer reads them from there.
SESSION_PARTICIPANTS = "workshops.participants"


def remember_participant(request, participant_id: int) -> None:
    ids = [i for i in request.session.get(SESSION_PARTICIPANTS, []) if i != participant_id]
    request.session[SESSION_PARTICIPANTS] = [participant_id, *ids][:20]


def remembered_participants(session) -> list[int]:
    try:
        return [int(i) for i in session.get(SESSION_PARTICIPANTS, [])]
    except (TypeError, ValueError):
        return []
