"""Replay a recent window of a learner's dashboard traffic under several algorithms.

The learner picks how many seconds back and which algorithms; ``start`` reads their
sandbox's recent requests, knobs and config into a trace (labs/framework/replay_window.py,
stored under that sandbox's own windows folder) and starts the same background replay a
lab result's "What if?" starts (labs/framework/replay.py). ``status`` reads it back for
the same page. Callers check ownership first (explainer/services/ownership.py): every path
here is built from the sandbox id they were allowed, so one learner's windows are never
reachable from another's pages.
"""
from __future__ import annotations

from pathlib import Path

from explainer.services.sandboxes import SandboxRef, backend_url, get_sandbox
from labs.framework import replay, replay_window
from labs.framework.replay_trace import TraceError
from labs.problems import Problem
from labs.sandbox.admin_client import AdminClient, AdminError
from labs.services import sandboxes as learner_sandboxes

DEFAULT_SECONDS = 30


class WindowRefused(Problem):
    """A window replay that cannot start; the message says what to change."""

    status = 400


def _backend_urls(ref: SandboxRef) -> dict[str, str]:
    if ref.backends:
        return dict(ref.backends)
    # A proxy started by hand (LBLAB_ADMIN_URL): its toy backends are its pools' backends.
    state = AdminClient(ref.admin_url, timeout=5.0).state()
    names = [b["name"] for pool in (state.get("pools") or {}).values()
             for b in pool.get("backends") or []]
    return {name: backend_url(ref, name, state) for name in dict.fromkeys(names)}


def current_algorithm(sandbox_id: str) -> str | None:
    """The first pool's algorithm now (the form's default baseline), None if unknown."""
    try:
        config = AdminClient(get_sandbox(sandbox_id).admin_url, timeout=3.0).config()
    except (AdminError, Problem):
        return None
    for pool in (config.get("pools") or {}).values():
        return ((pool or {}).get("balancer") or {}).get("algorithm", "round_robin")
    return None


def start(sandbox_id: str, seconds, algorithms: list[str]) -> tuple[str, str]:
    """Capture the last ``seconds`` of the sandbox and replay them; (window id, replay id)."""
    from labs.services import rates

    try:
        algos = replay.check_algorithms(algorithms)
        if len(algos) > replay.WEB_MAX_ALGORITHMS:
            raise replay.ReplayRefused(f"pick at most {replay.WEB_MAX_ALGORITHMS} algorithms: "
                                       "each one runs in a sandbox of its own")
        seconds = replay_window.check_window(seconds)
        ref = get_sandbox(sandbox_id)
        state_dir = learner_sandboxes.state_dir()
        _one_at_a_time(state_dir, sandbox_id)
        rates.check_start()  # a replay starts sandboxes, like a lab run
        out = replay_window.capture(admin_url=ref.admin_url, backend_urls=_backend_urls(ref),
                                    seconds=seconds, state_dir=state_dir,
                                    sandbox_id=sandbox_id)
        replay_id = replay.start_background(out, algos, state_dir)
    except (TraceError, replay.ReplayRefused, AdminError) as exc:
        raise WindowRefused(str(exc), path="window") from None
    return out.name, replay_id


def _one_at_a_time(state_dir: Path, sandbox_id: str) -> None:
    """Each algorithm is a sandbox for the window's length: one window replay per sandbox
    at a time keeps a learner to WEB_MAX_ALGORITHMS of them."""
    for pid in replay_window.windows_dir(state_dir, sandbox_id).glob("*/replays/*/pid.json"):
        found = replay.read(pid.parent.parent.parent, pid.parent.name)
        if found.get("state") == "running":
            raise replay.ReplayRefused("a replay of your dashboard is still running: wait "
                                       "for it to finish (its page shows its progress)")


def status(sandbox_id: str, window_id: str, replay_id: str) -> dict:
    """The replay's status (and result when done), or {"state": "missing"}."""
    try:
        folder = replay_window.window_dir(learner_sandboxes.state_dir(), sandbox_id, window_id)
    except TraceError as exc:
        return {"state": "missing", "message": str(exc)}
    if not folder.is_dir():
        return {"state": "missing", "message": f"no window {window_id} of this sandbox"}
    found = replay.read(folder, replay_id)
    found["trace"] = _trace_head(folder)
    return found


def _trace_head(folder: Path) -> dict:
    from labs.framework import replay_trace

    try:
        trace = replay_trace.load(folder / replay_trace.FILENAME)
    except TraceError:
        return {}
    return {"requests": len(trace.requests), "seconds": trace.duration,
            "algorithm": trace.algorithm, "notes": trace.notes}
