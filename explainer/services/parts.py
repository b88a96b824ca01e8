"""What each part of a sandbox is doing, for the dashboard's "what died" panel.

Theory of operation
-------------------
``labs.sandbox.SandboxService.parts`` says, per part (``proxy``, ``b1``...), whether its
process runs and answers, with a detail line naming the pid and the log. It does not
record *when* a part died: a killed process leaves nothing behind but a missing pid. So
this module remembers, per sandbox and part, the first time it was seen dead, and the
panel says "noticed dead at" that time (a lower bound, said as such). A part seen alive
again forgets it, so the next death gets its own time. The memory is per site process,
which is enough for a page that polls the same process; a restarted site notices anew.

``noticed`` is pure (the table and the clock are passed in), so it is tested without
processes. ``status`` adds the service's answer; ``None`` parts means the sandbox was
started by hand, so the site can neither see nor restart its processes.
"""
from __future__ import annotations

import threading
import time

from explainer.services.sandboxes import parts_of

_dead_since: dict[tuple[str, str], float] = {}
_lock = threading.Lock()


def noticed(sandbox_id: str, parts: dict, table: dict, now: float) -> dict:
    """``parts`` with ``since`` (epoch seconds, or None) on every dead part; updates table."""
    out = {}
    for name, info in parts.items():
        key = (sandbox_id, name)
        if info.get("alive"):
            table.pop(key, None)
            out[name] = {**info, "since": None}
        else:
            out[name] = {**info, "since": table.setdefault(key, now)}
    for key in [k for k in table if k[0] == sandbox_id and k[1] not in parts]:
        del table[key]  # a part removed from the sandbox
    return out


def status(sandbox_id: str) -> dict:
    """{"managed": bool, "parts": {name: {"alive", "detail", "since"}} or None}."""
    parts = parts_of(sandbox_id)
    if parts is None:
        return {"managed": False, "parts": None}
    with _lock:
        return {"managed": True, "parts": noticed(sandbox_id, parts, _dead_since, time.time())}
