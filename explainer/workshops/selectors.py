"""Read-only questions about workshops: the cockpit's snapshot, a learner's own page, CSV.

Nothing here writes. "Stuck" is measured, not guessed: a learner is stuck since the later
of joining and their last step forward (a lesson opened or completed, a check answered
right, a drill, prediction or lab passed; see progress.ProgressItem.moved_at). A wrong
answer or a failed run is not progress, however recent. The cockpit sorts raised hands first, then the longest
stuck, and names the learner stuck longest among those whose page is open.
"""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

from django.db.models import Count, Prefetch
from django.urls import reverse
from django.utils import timezone

from explainer.services.controls import FAULTS
from explainer.workshops import progress
from explainer.workshops.models import FaultInjection, FaultResult, Participant, Workshop

ONLINE_WINDOW = timedelta(seconds=90)  # the learner page sends a heartbeat every 20 s
ACTIVITY_SHOWN = 40


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def workshops_for(user) -> list[Workshop]:
    qs = Workshop.objects.select_related("instructor").annotate(learner_count=Count("participants"))
    if not user.is_superuser:
        qs = qs.filter(instructor=user)
    return list(qs)


def instructor_workshop(user, workshop_id: int) -> Workshop | None:
    """The workshop if this user runs it (superusers see every workshop)."""
    workshop = Workshop.objects.filter(pk=workshop_id).select_related("instructor").first()
    if workshop is None:
        return None
    if workshop.instructor_id != user.pk and not user.is_superuser:
        return None
    return workshop


def is_online(participant: Participant, now: datetime) -> bool:
    return bool(participant.open_pages > 0 and participant.last_seen_at
                and now - participant.last_seen_at <= ONLINE_WINDOW)


def stuck_since(participant: Participant, prog: progress.LearnerProgress) -> datetime:
    moved = [i.moved_at for i in prog.items if i.moved_at]
    return max([participant.joined_at, *moved])


def _item(item: progress.ProgressItem | None) -> dict | None:
    return item.as_json() if item else None


def _last_results(workshop: Workshop) -> tuple[FaultInjection | None, dict[int, FaultResult]]:
    last = (workshop.injections.select_related("requested_by")
            .prefetch_related(Prefetch("results", queryset=FaultResult.objects
                                       .select_related("participant")))
            .first())
    if last is None:
        return None, {}
    return last, {r.participant_id: r for r in last.results.all()}


def learner_row(workshop: Workshop, participant: Participant, prog: progress.LearnerProgress,
                now: datetime, last_fault: FaultResult | None = None) -> dict:
    since = stuck_since(participant, prog)
    return {
        "id": participant.pk,
        "name": participant.display_name,
        "joined_at": _iso(participant.joined_at),
        "last_seen_at": _iso(participant.last_seen_at),
        "online": is_online(participant, now),
        "hand_raised_at": _iso(participant.hand_raised_at),
        "lesson": _item(prog.lesson),
        "lab": _item(prog.lab),
        "passes": prog.passes,
        "failures": prog.failures,
        "last_activity_at": _iso(prog.last_activity),
        "stuck_since": _iso(since),
        "stuck_s": max(int((now - since).total_seconds()), 0),
        "sandbox": {"id": participant.sandbox_id or None, "state": participant.sandbox_state,
                    "label": participant.get_sandbox_state_display(),
                    "message": participant.sandbox_message},
        "last_fault": {"ok": last_fault.ok, "message": last_fault.message}
        if last_fault else None,
        "detail_url": reverse("workshops:learner-detail", args=[workshop.pk, participant.pk]),
    }


def _sort_key(row: dict):
    # Raised hands first (longest raised first), then the longest stuck.
    hand = row["hand_raised_at"]
    return (0 if hand else 1, hand or "", -row["stuck_s"])


def cockpit(workshop: Workshop, now: datetime | None = None) -> dict:
    """Everything the cockpit shows, as JSON (first render and every live update)."""
    from explainer.workshops.services.sandboxes import backend_names

    now = now or timezone.now()
    participants = list(workshop.participants.all())
    progresses = progress.for_learners([p.learner_key for p in participants])
    last, results = _last_results(workshop)
    rows = sorted((learner_row(workshop, p, progresses[p.learner_key], now, results.get(p.pk))
                   for p in participants), key=_sort_key)
    online = [r for r in rows if r["online"]]
    pool = online or rows
    stuck = max(pool, key=lambda r: r["stuck_s"]) if pool else None
    activity = [{"id": a.pk, "kind": a.kind, "text": a.text, "ok": a.ok, "at": _iso(a.created_at),
                 "participant": a.participant_id}
                for a in workshop.activities.all()[:ACTIVITY_SHOWN]]
    return {
        "kind": "cockpit",
        "ts": now.isoformat(),
        "workshop": {
            "id": workshop.pk, "title": workshop.title, "code": workshop.code,
            "open": workshop.is_open, "presenting": workshop.presenting,
            "present_sandbox": workshop.present_sandbox,
        },
        "counts": {
            "learners": len(rows), "online": len(online),
            "hands": sum(1 for r in rows if r["hand_raised_at"]),
            "sandboxes": sum(1 for r in rows if r["sandbox"]["state"] == "running"),
            "passes": sum(r["passes"] for r in rows),
            "failures": sum(r["failures"] for r in rows),
        },
        "stuck_longest": {"id": stuck["id"], "name": stuck["name"], "stuck_s": stuck["stuck_s"],
                          "stuck_since": stuck["stuck_since"]} if stuck else None,
        "learners": rows,
        "activity": activity,
        "last_injection": injection_json(last) if last else None,
        "backends": backend_names(),
    }


def injection_json(injection: FaultInjection) -> dict:
    results = [{"participant": r.participant_id, "name": r.participant.display_name,
                "sandbox": r.sandbox_id, "ok": r.ok, "message": r.message}
               for r in injection.results.all()]
    return {"id": injection.pk, "fault": injection.fault,
            "label": FAULTS.get(injection.fault, (injection.fault,))[0],
            "backend": injection.backend, "values": injection.values,
            "at": _iso(injection.created_at),
            "ok": sum(1 for r in results if r["ok"]), "total": len(results),
            "results": results}


def learner_page(participant: Participant) -> dict:
    """What one learner sees of themselves (never anyone else's rows)."""
    from explainer.workshops.services.sandboxes import sandbox_summary
    from explainer.workshops.services.workshops import presenter_payload

    now = timezone.now()
    prog = progress.for_learner(participant.learner_key)
    workshop = participant.workshop
    faults = [{"at": _iso(r.injection.created_at), "ok": r.ok, "message": r.message}
              for r in participant.fault_results.select_related("injection")
              .order_by("-injection__created_at")[:10]]
    return {
        "kind": "me",
        "workshop": {"title": workshop.title, "code": workshop.code, "open": workshop.is_open},
        "me": {"id": participant.pk, "name": participant.display_name,
               "hand_raised_at": _iso(participant.hand_raised_at),
               "joined_at": _iso(participant.joined_at),
               "stuck_since": _iso(stuck_since(participant, prog))},
        "sandbox": sandbox_summary(participant),
        "progress": [i.as_json() for i in sorted(
            prog.items, key=lambda i: i.updated_at or now, reverse=True)],
        "passes": prog.passes, "failures": prog.failures,
        "faults": faults,
        "present": presenter_payload(workshop),
    }


# Where a learner finds lessons and labs (shown when they have no progress yet).
COURSE_LINKS = (("a lesson", "/course/"), ("a lab", "/labs/"))


def course_links() -> list[dict]:
    from django.urls import Resolver404, resolve

    out = []
    for label, path in COURSE_LINKS:
        try:
            resolve(path)
        except Resolver404:
            continue
        out.append({"label": f"open {label}", "url": path})
    return out


def learner_detail(workshop: Workshop, participant: Participant) -> dict:
    """One learner's work for the instructor (or for that learner)."""
    data = learner_page(participant)
    data["activity"] = [{"text": a.text, "ok": a.ok, "at": _iso(a.created_at)}
                        for a in participant.activities.all()[:50]]
    return data


CSV_COLUMNS = ["display_name", "joined_at", "last_seen_at", "online", "hand_raised",
               "current_lesson", "lesson_step", "current_lab", "lab_step", "passes", "failures",
               "passed_items", "stuck_minutes", "sandbox_state", "sandbox_id",
               "faults_received", "last_fault_result"]


def csv_rows(workshop: Workshop, now: datetime | None = None) -> list[list[str]]:
    now = now or timezone.now()
    participants = list(workshop.participants.all())
    progresses = progress.for_learners([p.learner_key for p in participants])
    rows = []
    for p in participants:
        prog = progresses[p.learner_key]
        results = list(p.fault_results.select_related("injection")
                       .order_by("-injection__created_at"))
        lesson, lab = prog.lesson, prog.lab
        passed = sorted({f"{i.kind}: {i.title}" for i in prog.items if i.passed})
        rows.append([
            p.display_name, _iso(p.joined_at) or "", _iso(p.last_seen_at) or "",
            "yes" if is_online(p, now) else "no", "yes" if p.hand_raised_at else "no",
            lesson.title if lesson else "", lesson.step if lesson else "",
            lab.title if lab else "", lab.step if lab else "",
            str(prog.passes), str(prog.failures), "; ".join(passed),
            f"{max((now - stuck_since(p, prog)).total_seconds(), 0) / 60:.1f}",
            p.sandbox_state, p.sandbox_id,
            str(sum(1 for r in results if r.ok)),
            (("ok: " if results[0].ok else "failed: ") + results[0].message) if results else "",
        ])
    return rows


def csv_text(workshop: Workshop) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in csv_rows(workshop):
        # A cell starting with = + - @ is a formula in spreadsheets: display names are typed
        # by learners, so neutralise it (OWASP CSV injection).
        writer.writerow(["'" + c if c[:1] in ("=", "+", "-", "@", "\t", "\r") else c
                         for c in row])
    return out.getvalue()
