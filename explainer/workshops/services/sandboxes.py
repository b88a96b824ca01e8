"""Each learner's own sandbox, and faults injected into all of them at once.

A learner's sandbox is *the same* one their graded labs use: its id comes from their
learner key (labs.services.sandboxes.sandbox_id_for) and it lives in the labs' state
directory under the labs' cap (LBLAB_LABS_MAX_SANDBOXES). So "inject a fault for
everyone" reaches whatever the learner is working in, a lab run's sandbox included, and
the learner's dashboard is /lab/<sandbox id>/. The sandbox starts on demand (the learner
presses Start), is touched while the learner's page is open, and is stopped by the
labs' idle reaper or when the instructor ends the workshop.

Faults go straight to each toy backend's control API (``PUT /_control/faults``), with the
same patches the dashboard's Faults tab sends (explainer.services.controls.fault_patch),
in parallel; each learner gets their own result: done, or why not.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from labs.sandbox.admin_client import AdminError, BackendControl
from explainer.services.controls import FAULTS, fault_patch
from explainer.workshops.identity import labs_key, variants
from explainer.workshops.models import Activity, FaultInjection, FaultResult, Participant, Workshop
from explainer.workshops.services import live
from explainer.workshops.services.workshops import WorkshopError, record
from labs.problems import LabFull, Problem, TooMany
from labs.sandbox import SandboxNotFound, SandboxService
from labs.services import sandboxes as learner_sandboxes

log = logging.getLogger("explainer.workshops")

MAX_PARALLEL = 8  # toy backends answer in milliseconds; this bounds threads, not time


def service() -> SandboxService:
    return learner_sandboxes.service()


def sandbox_id_for(learner_key: str) -> str:
    return learner_sandboxes.sandbox_id_for(learner_key)


def own_sandbox_id(participant: Participant) -> str:
    """The learner's lab sandbox: the id the labs give their key (in the labs' spelling)."""
    return sandbox_id_for(labs_key(participant.learner_key))


def candidate_ids(participant: Participant) -> list[str]:
    """Every sandbox id this learner may be working in, their lab sandbox first.

    While the labs and the course spell learner keys differently they derive different
    ids for the same learner; a fault for everyone goes to each of them that runs."""
    ids = [own_sandbox_id(participant)]
    for key in variants(participant.learner_key):
        if sandbox_id_for(key) not in ids:
            ids.append(sandbox_id_for(key))
    if participant.sandbox_id and participant.sandbox_id not in ids:
        ids.insert(0, participant.sandbox_id)
    return ids


def backend_count() -> int:
    return int(getattr(settings, "LBLAB_WORKSHOP_BACKENDS", 4))


def backend_names() -> list[str]:
    return [f"b{i}" for i in range(1, backend_count() + 1)]


def _timeout() -> float:
    return float(getattr(settings, "LBLAB_ADMIN_TIMEOUT", 3.0))


def _set_state(participant: Participant, state: str, message: str = "",
               sandbox_id: str | None = None) -> None:
    participant.sandbox_state = state
    participant.sandbox_message = message
    if sandbox_id is not None:
        participant.sandbox_id = sandbox_id
    participant.save(update_fields=["sandbox_state", "sandbox_message", "sandbox_id"])


def ensure_sandbox(participant: Participant) -> dict:
    """Start the learner's sandbox unless it already runs; returns what the page shows."""
    sandbox_id = own_sandbox_id(participant)
    name = participant.display_name
    try:
        sb, started = learner_sandboxes.ensure(
            labs_key(participant.learner_key), backends=backend_count(),
            reuse=lambda s: s.status == "starting" or (s.status == "running"
                                                       and s.alive("proxy")))
    except (LabFull, TooMany) as exc:
        message = exc.message + " Tell your instructor if it keeps happening."
        _set_state(participant, Participant.Sandbox.REFUSED, message, sandbox_id)
        record(participant.workshop, Activity.Kind.SANDBOX,
               f"{name}: no sandbox ({exc.message})", participant, ok=False)
        raise WorkshopError(message, status=exc.status) from None
    except Problem as exc:
        message = f"{exc.message} Press Start to try again; if it keeps failing, tell your instructor."
        _set_state(participant, Participant.Sandbox.FAILED, message, sandbox_id)
        record(participant.workshop, Activity.Kind.SANDBOX,
               f"{name}: sandbox failed to start", participant, ok=False)
        log.warning("sandbox %s of %s failed: %s", sandbox_id, name, exc.message)
        raise WorkshopError(message, status=exc.status) from None
    _set_state(participant, Participant.Sandbox.RUNNING, "", sandbox_id)
    if started:
        record(participant.workshop, Activity.Kind.SANDBOX,
               f"{name} started a sandbox ({sandbox_id})", participant, ok=True)
    return {"ok": True,
            "message": "Your sandbox is running." if started else "Your sandbox was running.",
            "started": started, "sandbox": sandbox_summary(participant, sb)}


def sandbox_summary(participant: Participant, sb=None) -> dict:
    from django.urls import reverse

    sandbox_id = participant.sandbox_id
    running = bool(sandbox_id) and participant.sandbox_state == Participant.Sandbox.RUNNING
    if running and sb is None:
        try:
            sb = service().get(sandbox_id)
        except SandboxNotFound:  # reaped since: the next refresh_state says so
            sb = None
    return {"id": sandbox_id or None, "state": participant.sandbox_state,
            "label": participant.get_sandbox_state_display(),
            "message": participant.sandbox_message,
            "dashboard_url": reverse("explainer:sandbox-dashboard", args=[sandbox_id])
            if running else None,
            "proxy_url": getattr(sb, "proxy_url", None) if running else None}


def refresh_state(participant: Participant) -> Participant:
    """Re-read whether the learner's sandbox still runs (it may have been reaped)."""
    if participant.sandbox_state != Participant.Sandbox.RUNNING:
        return participant
    try:
        sb = service().get(participant.sandbox_id)
        alive = sb.alive("proxy")
    except SandboxNotFound:
        alive = False
    if not alive:
        _set_state(participant, Participant.Sandbox.STOPPED,
                   "Your sandbox was stopped (idle, or the lab machine restarted). Press "
                   "Start to get a fresh one.")
    return participant


def touch(participant: Participant) -> None:
    if participant.sandbox_state != Participant.Sandbox.RUNNING or not participant.sandbox_id:
        return
    try:
        service().touch(participant.sandbox_id)
    except SandboxNotFound:
        refresh_state(participant)


def stop_sandbox(participant: Participant) -> bool:
    if not participant.sandbox_id:
        return False
    svc = service()
    try:
        svc.stop(participant.sandbox_id, grace=2.0)
        stopped = True
    except SandboxNotFound:
        stopped = False
    _set_state(participant, Participant.Sandbox.STOPPED,
               "Your sandbox was stopped by your instructor.")
    return stopped


def stop_all(workshop: Workshop) -> list[str]:
    stopped = []
    for participant in workshop.participants.exclude(sandbox_id=""):
        if stop_sandbox(participant):
            stopped.append(participant.sandbox_id)
    return stopped


# ---------------------------------------------------------------- faults for everyone

def _inject_into(svc: SandboxService, sb, backend: str, fault: str,
                 patch: dict | None) -> str:
    """Apply the fault to one sandbox's backend; returns what was done, raises AdminError."""
    url = sb.backends.get(backend)
    if url is None:
        raise AdminError(f"sandbox {sb.id} has no backend {backend} (it has "
                         f"{', '.join(sb.backends) or 'none'})")
    control = BackendControl(url, timeout=_timeout())
    if fault == "kill":
        control.crash()
        done = f"killed {backend}"
    elif fault == "clear":
        control.clear_faults()
        done = f"cleared every fault on {backend}"
    else:
        control.set_faults(patch or {})
        shown = ", ".join(f"{k}={v}" for k, v in (patch or {}).items())
        done = f"{backend}: {FAULTS[fault][0].lower()} ({shown})"
    try:
        svc.touch(sb.id)
    except SandboxNotFound:  # stopped between the fault and now: the fault still happened
        pass
    return done


def _inject_one(svc: SandboxService, participant: Participant, backend: str, fault: str,
                patch: dict | None) -> tuple[bool, str, str]:
    """(ok, message, sandbox ids) for one learner; never raises for a learner's problem."""
    name = participant.display_name
    running = []
    for sandbox_id in candidate_ids(participant):
        try:
            running.append(svc.get(sandbox_id))
        except SandboxNotFound:
            continue
    if not running:
        return False, f"{name} has no sandbox running (not started yet, or stopped)", ""
    done, problems = [], []
    for sb in running:
        try:
            done.append((sb.id, _inject_into(svc, sb, backend, fault, patch)))
        except AdminError as exc:
            problems.append(exc.message)
    ids = ",".join(sid for sid, _ in done) or running[0].id
    if not done:
        return False, "; ".join(problems), ids
    message = done[0][1] + (f" (in {len(done)} sandboxes: {ids})" if len(done) > 1 else "")
    if problems:
        message += "; but " + "; ".join(problems)
    return True, message, ids


def inject_fault_for_all(workshop: Workshop, *, user, backend: str, fault: str,
                         values: dict | None = None) -> FaultInjection:
    if not workshop.is_open:
        raise WorkshopError("this workshop has ended: its sandboxes are stopped", status=410)
    if fault not in FAULTS:
        raise WorkshopError(f"unknown fault {fault!r}; choose one of {', '.join(FAULTS)}",
                            field="fault")
    patch = None if fault in ("kill", "clear") else fault_patch(fault, values or {})
    participants = list(workshop.participants.all())
    if not participants:
        raise WorkshopError("nobody has joined yet: share the join code first", status=409)
    svc = service()
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(participants))) as pool:
        outcomes = list(pool.map(lambda p: _inject_one(svc, p, backend, fault, patch),
                                 participants))
    injection = FaultInjection.objects.create(workshop=workshop, requested_by=user,
                                              backend=backend, fault=fault,
                                              values=patch or {})
    FaultResult.objects.bulk_create([
        FaultResult(injection=injection, participant=p, sandbox_id=sid[:63], ok=ok, message=msg)
        for p, (ok, msg, sid) in zip(participants, outcomes)])
    done = sum(1 for ok, _, _ in outcomes if ok)
    label = FAULTS[fault][0]
    record(workshop, Activity.Kind.FAULT,
           f"{label} on {backend} for everyone: {done} of {len(participants)} "
           f"sandbox{'' if len(participants) == 1 else 'es'}",
           ok=done == len(participants))
    for p, (ok, msg, _) in zip(participants, outcomes):
        if ok:
            live.notice(workshop.pk, p.pk, f"Your instructor injected a fault: {msg}. Find it "
                        "on your dashboard.", level="warn")
    return injection
