"""Who a learner is: one key shared by the course, the labs and the workshops.

The rule belongs to the labs (labs.services.runs.learner_key: ``u:<user pk>`` when logged
in, else ``s:<session key>``, the session created on first use); this module hands it on
so every part of the site agrees: progress rows find each other by this string, and a
learner's sandbox id is derived from it (labs.services.sandboxes.sandbox_id_for), so the
course's "see it live", the labs and a workshop all use the *same* sandbox.
(explainer.workshops.identity looks for this module first.)

The fallback, used only when the labs app is not importable, applies the same rule.
"""
from __future__ import annotations

from django.http import HttpRequest


def learner_key(request: HttpRequest) -> str:
    try:
        from labs.services.runs import learner_key as labs_learner_key
    except ImportError:
        labs_learner_key = None
    if labs_learner_key is not None:
        return labs_learner_key(request)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"u:{user.pk}"
    if not request.session.session_key:
        request.session.save()  # an anonymous visitor gets a session (and so a key) now
    return f"s:{request.session.session_key}"
