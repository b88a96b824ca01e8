"""One error type for everything a user can cause: ``Problem(message, errors, status)``.

The site's views, the labs' services and the CLI all answer a mistake the same way: a
headline that says what to change, the list of ``{"path", "message"}`` items (one per
field or config path at fault; the headline alone when there is no better place), and the
HTTP status it maps to. Every error class that once re-implemented this shape is now a
subclass (AdminError, ControlError, SandboxUnavailable, WorkshopError, RunError...), so a
view renders any of them with ``as_json()`` and ``status`` and nothing else.

It lives in labs/ (below explainer/, which imports it; labs never imports explainer).
"""
from __future__ import annotations


class Problem(Exception):
    """Something a user can fix; ``message`` says what, ``errors`` where, ``status`` how bad."""

    status: int = 400

    def __init__(self, message: str, errors: list[dict] | None = None,
                 status: int | None = None, *, path: str = ""):
        super().__init__(message)
        self.message = message
        self.errors = (list(errors) if errors is not None
                       else [{"path": path, "message": message}])
        if status is not None:
            self.status = status

    def as_json(self) -> dict:
        return {"ok": False, "error": self.message, "errors": self.errors}


class TooMany(Problem):
    """A rate limit was reached (HTTP 429); ``retry_after`` is in seconds."""

    status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class LabFull(Problem):
    """Every sandbox slot is taken (HTTP 503); ``retry_after`` is in seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
