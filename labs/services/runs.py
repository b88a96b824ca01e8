"""Lab runs for the site: validate, start in the background, poll, record progress.

A run never executes in the web request: ``start`` checks the document (the proxy's own
validation, every error with its path, so the page can show them in place), then starts
``python manage.py labs run SLUG --config FILE --json --run-dir DIR --sandbox ID --keep``
as a separate process and returns at once. That process writes ``status.json`` while it
runs and the result files at the end (labs/framework/runner.py); ``status`` reads them,
so any web worker can answer a poll, and records the outcome in the database once
(LabRun, LabProgress). One run at a time per learner; each learner's runs use their own
sandbox (labs/services/sandboxes.py), under the machine's cap.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from labs.framework import registry
from labs.framework.runner import RunRefused, check_document, parse_document
from labs.models import LabProgress, LabRun
from labs.problems import Problem
from labs.sandbox import procs
from labs.sandbox.commands import REPO_ROOT
from labs.services import rates, sandboxes


class RunError(Problem):
    """The run cannot start; ``errors`` is [{"path", "message"}] for the page."""

    def __init__(self, message: str, errors: list[dict] | None = None, status: int = 400):
        super().__init__(message, errors, status)


def learner_key(request) -> str:
    """``u:<user pk>`` when logged in, else ``s:<session key>``; a visitor without a
    session gets one now, counted against their address's session rate (rates.py)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"u:{user.pk}"
    if not request.session.session_key:
        rates.check_session(rates.client_address(request) if hasattr(request, "META") else None)
        request.session.save()
    return f"s:{request.session.session_key}"


def runs_dir() -> Path:
    return sandboxes.state_dir() / "labruns"


def validate(slug: str, text: str) -> list[dict]:
    """Every problem of the document as [{"path", "message"}]; [] when it can run."""
    lab = registry.get(slug)
    try:
        check_document(lab, parse_document(text))
    except RunRefused as exc:
        return exc.as_json()["errors"]
    return []


def placement_of(lab, text: str):
    """Where a run of this (valid) document would run (labs/framework/placement.py)."""
    from labs.framework.placement import decide

    config, settings = check_document(lab, parse_document(text))
    return decide(lab.spec, settings, config, sandboxes.driver_name(), sandboxes.lab_fallback())


def _alive(run: LabRun) -> bool:
    return procs.pid_alive(run.pid, run.pid_start)


def start(learner: str, slug: str, text: str) -> LabRun:
    lab = registry.get(slug)
    errors = validate(slug, text)
    if errors:
        raise RunError("the config has problems: nothing was started", errors)
    where = placement_of(lab, text)
    if where.refused:
        raise RunError(where.message(), status=409)
    for other in LabRun.objects.filter(learner=learner, state__in=[LabRun.QUEUED,
                                                                   LabRun.RUNNING]):
        if _alive(other):
            raise RunError(f"your run {other.id} of {other.slug} is still going; wait for it",
                           status=409)
        refresh(other)
    sandboxes.reap()
    sandbox_id = sandboxes.sandbox_id_for(learner)
    svc = sandboxes.service()
    running = [sb for sb in svc.list() if sb.status == "starting"
               or any(sb.alive(p) for p in sb.part_names)]
    if sandbox_id not in {sb.id for sb in running} and len(running) >= svc.max_sandboxes:
        raise sandboxes.full(svc)
    rates.check_start()  # a run starts the learner's sandbox afresh
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
    run_dir = runs_dir() / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "input.yaml").write_text(text, encoding="utf-8")
    # The run's sandbox goes where the site's go (labs/framework/placement.py: unless the
    # lab needs what that driver lacks).
    argv = [sys.executable, str(REPO_ROOT / "manage.py"), "labs", "run", slug,
            "--config", str(run_dir / "input.yaml"), "--json", "--run-dir", str(run_dir),
            "--run-id", run_id, "--sandbox", sandbox_id, "--keep",
            "--state-dir", str(sandboxes.state_dir()),
            "--driver", sandboxes.driver_name(), "--fallback", sandboxes.lab_fallback()]
    with open(run_dir / "cli.json", "wb") as out, open(run_dir / "cli.log", "ab") as err:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    # Recorded for cleanup.py: Ctrl-C on the launcher stops runs still going.
    (run_dir / "pid.json").write_text(json.dumps({"pid": proc.pid,
                                                  "pid_start": procs.start_ticks(proc.pid)}))
    run = LabRun.objects.create(id=run_id, learner=learner, slug=slug, document=text,
                                state=LabRun.RUNNING, run_dir=str(run_dir),
                                sandbox_id=sandbox_id, pid=proc.pid,
                                pid_start=procs.start_ticks(proc.pid))
    progress, _ = LabProgress.objects.get_or_create(learner=learner, slug=slug)
    progress.attempts += 1
    progress.last_document = text
    progress.save()
    _reaper(proc)
    return run


def _reaper(proc: subprocess.Popen) -> None:
    """Collect the child's exit status in the background (no zombie in the web process)."""
    import threading

    threading.Thread(target=proc.wait, daemon=True).start()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def refresh(run: LabRun) -> dict:
    """The run's status from its files; records the outcome in the database once."""
    run_dir = Path(run.run_dir)
    status = _read_json(run_dir / "status.json") or {"state": "running", "phase": "starting",
                                                     "message": "starting", "progress": 0.0}
    alive = _alive(run)
    if status.get("state") == "running" and not alive and run.state in (LabRun.QUEUED,
                                                                        LabRun.RUNNING):
        # The process is gone without a final status: say why from its log.
        time.sleep(0.2)
        status = _read_json(run_dir / "status.json") or status
        if status.get("state") == "running":
            status = {"state": "failed", "phase": "error", "message":
                      "the run ended without a result: " + procs.tail(run_dir / "cli.log", 8)}
    if status.get("state") in ("done", "failed", "refused") and run.state in (LabRun.QUEUED,
                                                                             LabRun.RUNNING):
        _record(run, status)
    out = {"run_id": run.id, "slug": run.slug, "state": status.get("state"),
           "phase": status.get("phase"), "message": status.get("message"),
           "progress": status.get("progress", 0.0), "errors": status.get("errors") or []}
    if status.get("state") == "done":
        out["result"] = result_of(run)
    return out


@transaction.atomic
def _record(run: LabRun, status: dict) -> None:
    run = LabRun.objects.select_for_update().get(pk=run.pk)
    if run.state not in (LabRun.QUEUED, LabRun.RUNNING):
        return
    run.state = status["state"]
    run.finished_at = timezone.now()
    run.headline = status.get("message") or ""
    if status["state"] == "done":
        # None: the run could not be graded (part of the sandbox died): neither verdict.
        run.passed = bool(status.get("passed")) if status.get("graded", True) else None
    run.save()
    if run.passed:
        _mark_passed(run)


def _mark_passed(run: LabRun) -> None:
    progress, _ = LabProgress.objects.get_or_create(learner=run.learner, slug=run.slug)
    if not progress.passed:
        progress.passed, progress.passed_at = True, timezone.now()
        # A first pass after "Show the fix" is recorded as such (it stays so).
        progress.passed_after_reveal = progress.solution_revealed
    progress.best_run = run.id
    progress.save()


def result_of(run: LabRun) -> dict | None:
    data = _read_json(Path(run.run_dir) / "result.json")
    if data is None:
        return None
    return {"passed": data["passed"], "graded": data.get("graded", True),
            "result": data["result"], "time_scale": data["time_scale"],
            "sandbox": data.get("sandbox"), "stats": data.get("stats"),
            "timeline": data.get("timeline"), "label": data.get("label"),
            "seconds": data.get("seconds"), "failed_requests": failed_requests(run)}


def failed_requests(run: LabRun, limit: int = 60) -> list[dict]:
    """The failed requests of a run, for tracing (the 502/503/504 lab shows them)."""
    from labs.framework.recording import Recording, failed

    path = Path(run.run_dir) / "recording.json"
    if not path.exists():
        return []
    rec = Recording.load(path)
    out = []
    for e in rec.requests():
        if failed(e):
            out.append({k: e.get(k) for k in ("request_id", "t", "method", "path", "status",
                                              "backend", "pool", "termination", "proxy_error",
                                              "error", "latency_ms")})
    return out[:limit]


def request_diagram(run: LabRun, request_id: str) -> dict | None:
    from labs.framework.grading import request_diagram as draw
    from labs.framework.recording import Recording

    rec = Recording.load(Path(run.run_dir) / "recording.json")
    event = rec.request(request_id)
    if event is None:
        return None
    return {"event": event, **(draw(event, f"Request {request_id}") or {})}


def regrade(run: LabRun, answers: dict) -> dict:
    """Grade a finished run again with a tracing lab's answers (no new run)."""
    from labs.framework.definition import check_answers
    from labs.framework.runner import regrade as do_regrade

    lab = registry.get(run.slug)
    if lab.spec.answer is None:
        raise RunError("this lab is graded by running it, not by answers")
    if run.state != LabRun.DONE:
        raise RunError("the run has not finished yet")
    errors = check_answers(lab.spec.answer, answers)
    if errors:
        raise RunError("the answers have problems", [{"path": p, "message": m}
                                                     for p, m in errors])
    outcome = do_regrade(lab, Path(run.run_dir), answers)
    run.passed = outcome.result.passed
    run.headline = outcome.result.headline
    run.save()
    if run.passed:
        _mark_passed(run)
    return result_of(run)


def reveal_solution(learner: str, slug: str) -> dict:
    lab = registry.get(slug)
    progress, _ = LabProgress.objects.get_or_create(learner=learner, slug=slug)
    if not progress.solution_revealed:
        progress.solution_revealed, progress.revealed_at = True, timezone.now()
    progress.save()
    return {"yaml": lab.solution_text(), "why": lab.solution_md}


def progress_for(learner: str) -> dict[str, LabProgress]:
    return {p.slug: p for p in LabProgress.objects.filter(learner=learner)}


def run_for(learner: str, slug: str, run_id: str) -> LabRun | None:
    return LabRun.objects.filter(pk=run_id, learner=learner, slug=slug).first()
