"""Creating, joining, presenting and ending workshops: every write the pages make.

Each function takes plain values (already-validated form data, a learner key, a user),
changes the database, writes an `Activity` line when the cockpit should hear of it, and
tells open pages (services/live.py). Errors a user can cause raise `WorkshopError` with a
message that says what to change.
"""
from __future__ import annotations

import re
import secrets

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from explainer.workshops.models import Activity, Participant, Workshop
from explainer.workshops.services import live
from labs.problems import Problem

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud, typed by hand
CODE_LENGTH = 6
NAME_MAX = 40
TAB_ID = re.compile(r"^tab-[a-z][a-z-]{0,30}$")
CARD_ID = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class WorkshopError(Problem):
    """Something the user can fix; `field` names the form field when there is one."""

    def __init__(self, message: str, status: int = 400, field: str = ""):
        super().__init__(message, status=status, path=field)
        self.field = field


def instructor_can_run(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active
                and user.has_perm("workshops.run_workshop"))


def record(workshop: Workshop, kind: str, text: str, participant: Participant | None = None,
           ok: bool | None = None) -> Activity:
    activity = Activity.objects.create(workshop=workshop, participant=participant, kind=kind,
                                       text=text[:300], ok=ok)
    live.cockpit_changed(workshop.pk, kind)
    return activity


# ---------------------------------------------------------------- workshops

def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(code: str) -> str:
    return re.sub(r"[\s-]+", "", code or "").upper()


def create_workshop(*, instructor, title: str) -> Workshop:
    if not instructor_can_run(instructor):
        raise WorkshopError("only instructors can create workshops: ask an admin to run "
                            "`manage.py createinstructor` for your account", status=403)
    title = " ".join((title or "").split())
    if not title:
        raise WorkshopError("give the workshop a title", field="title")
    for _ in range(10):
        try:
            with transaction.atomic():
                workshop = Workshop.objects.create(
                    title=title[:120], code=new_code(), instructor=instructor,
                    present_sandbox=settings.LBLAB_SANDBOX)
        except IntegrityError:  # the code is taken (1 in 10^9 per pair); draw again
            continue
        record(workshop, Activity.Kind.WORKSHOP,
               f"Workshop opened by {instructor.get_username()}; join code {workshop.code}")
        return workshop
    raise WorkshopError("could not find a free join code; try again", status=503)


def open_workshop(code: str) -> Workshop:
    """The open workshop with this join code, or a WorkshopError saying what is wrong."""
    wanted = normalise_code(code)
    if not wanted:
        raise WorkshopError("type the join code your instructor shows", field="code")
    workshop = Workshop.objects.filter(code=wanted).first()
    if workshop is None:
        raise WorkshopError(f"no workshop has the code {wanted!r}: check it with your "
                            "instructor (codes use letters and digits, no 0, O, 1 or I)",
                            status=404, field="code")
    if not workshop.is_open:
        raise WorkshopError(f"the workshop {workshop.title!r} has ended; ask your instructor "
                            "for the code of a current one", status=410, field="code")
    return workshop


def end_workshop(workshop: Workshop) -> dict:
    """Close the workshop to new joins and stop every learner's sandbox."""
    from explainer.workshops.services import sandboxes

    stopped = sandboxes.stop_all(workshop)
    workshop.ended_at = timezone.now()
    workshop.presenting = False
    workshop.save(update_fields=["ended_at", "presenting"])
    n = len(stopped)
    sandboxes_word = "sandbox" if n == 1 else "sandboxes"
    record(workshop, Activity.Kind.WORKSHOP, f"Workshop ended; {n} {sandboxes_word} stopped")
    live.workshop_ended(workshop.pk)
    return {"ok": True, "message": f"Workshop ended. Stopped {n} {sandboxes_word}.",
            "stopped": stopped}


# ---------------------------------------------------------------- learners

def clean_display_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise WorkshopError("type the name the instructor will see next to your work",
                            field="display_name")
    if len(name) > NAME_MAX:
        raise WorkshopError(f"use at most {NAME_MAX} characters for your name",
                            field="display_name")
    if any(ord(c) < 32 for c in name):
        raise WorkshopError("your name cannot contain control characters", field="display_name")
    return name


def join(*, workshop: Workshop, learner_key: str, display_name: str) -> tuple[Participant, bool]:
    """Seat the learner (or rename them when they join again); returns (participant, new)."""
    if not workshop.is_open:
        raise WorkshopError(f"the workshop {workshop.title!r} has ended", status=410)
    name = clean_display_name(display_name)
    taken = (Participant.objects.filter(workshop=workshop, display_name__iexact=name)
             .exclude(learner_key=learner_key).exists())
    if taken:
        raise WorkshopError(f"someone in this workshop is already called {name!r}: add an "
                            "initial or a nickname", status=409, field="display_name")
    try:
        with transaction.atomic():
            participant, created = Participant.objects.get_or_create(
                workshop=workshop, learner_key=learner_key,
                defaults={"display_name": name, "last_seen_at": timezone.now()})
            if not created and participant.display_name != name:
                old = participant.display_name
                participant.display_name = name
                participant.save(update_fields=["display_name"])
                record(workshop, Activity.Kind.JOINED, f"{old} is now called {name}",
                       participant)
    except IntegrityError:  # two joins with the same name at the same instant
        raise WorkshopError(f"someone in this workshop is already called {name!r}: add an "
                            "initial or a nickname", status=409, field="display_name") from None
    if created:
        record(workshop, Activity.Kind.JOINED, f"{name} joined", participant)
    return participant, created


def participant_for(workshop: Workshop, learner_key: str) -> Participant | None:
    return Participant.objects.filter(workshop=workshop, learner_key=learner_key).first()


def set_hand(participant: Participant, raised: bool) -> Participant:
    if raised == (participant.hand_raised_at is not None):
        return participant
    participant.hand_raised_at = timezone.now() if raised else None
    participant.save(update_fields=["hand_raised_at"])
    name = participant.display_name
    record(participant.workshop, Activity.Kind.HAND,
           f"{name} raised a hand: stuck" if raised else f"{name} lowered their hand",
           participant, ok=None)
    return participant


def page_opened(participant_id: int) -> None:
    Participant.objects.filter(pk=participant_id).update(open_pages=F("open_pages") + 1,
                                                         last_seen_at=timezone.now())
    _presence_changed(participant_id)


def page_closed(participant_id: int) -> None:
    Participant.objects.filter(pk=participant_id, open_pages__gt=0).update(
        open_pages=F("open_pages") - 1, last_seen_at=timezone.now())
    _presence_changed(participant_id)


def seen(participant_id: int) -> None:
    """A heartbeat from the learner's page; also keeps their sandbox from the idle reaper."""
    from explainer.workshops.services import sandboxes

    Participant.objects.filter(pk=participant_id).update(last_seen_at=timezone.now())
    participant = Participant.objects.filter(pk=participant_id).first()
    if participant is not None:
        sandboxes.touch(participant)


def _presence_changed(participant_id: int) -> None:
    workshop_id = (Participant.objects.filter(pk=participant_id)
                   .values_list("workshop_id", flat=True).first())
    if workshop_id is not None:
        live.cockpit_changed(workshop_id, "presence")


# ---------------------------------------------------------------- presenter mode

def presenter_payload(workshop: Workshop) -> dict:
    """What learners' pages need to follow the instructor (also sent on connect)."""
    from django.urls import reverse

    return {
        "on": workshop.presenting,
        "sandbox": workshop.present_sandbox,
        "screen_url": reverse("workshops:screen", args=[workshop.code]),
        "view": workshop.present_view or {},
        "started_at": workshop.present_started_at.isoformat()
        if workshop.present_started_at else None,
    }


def start_presenting(workshop: Workshop, sandbox_id: str | None = None) -> dict:
    from explainer.services.sandboxes import SandboxError, check_id

    if not workshop.is_open:
        raise WorkshopError("this workshop has ended", status=410)
    chosen = sandbox_id or workshop.present_sandbox or settings.LBLAB_SANDBOX
    try:
        check_id(chosen)
    except SandboxError as exc:
        raise WorkshopError(exc.message, field="sandbox") from None
    workshop.presenting = True
    workshop.present_sandbox = chosen
    workshop.present_view = {"seq": 0}
    workshop.present_started_at = timezone.now()
    workshop.save(update_fields=["presenting", "present_sandbox", "present_view",
                                 "present_started_at"])
    record(workshop, Activity.Kind.PRESENT,
           f"Presenter mode on: learners follow the dashboard of sandbox {chosen}")
    payload = presenter_payload(workshop)
    live.presenter(workshop.pk, payload)
    return {"ok": True, "message": "Presenting: every learner's page now follows your view.",
            "present": payload}


def stop_presenting(workshop: Workshop) -> dict:
    if workshop.presenting:
        workshop.presenting = False
        workshop.save(update_fields=["presenting"])
        record(workshop, Activity.Kind.PRESENT, "Presenter mode off")
    payload = presenter_payload(workshop)
    live.presenter(workshop.pk, payload)
    return {"ok": True, "message": "Stopped presenting: learners are back on their own work.",
            "present": payload}


def clean_view(view: dict) -> dict:
    """Only what a follower can apply: a tab of the dashboard, a scroll position, a card."""
    out: dict = {}
    tab = view.get("tab")
    if isinstance(tab, str) and TAB_ID.match(tab):
        out["tab"] = tab
    scroll = view.get("scroll")
    if isinstance(scroll, (int, float)) and not isinstance(scroll, bool):
        out["scroll"] = round(min(max(float(scroll), 0.0), 1.0), 4)
    spot = view.get("spot")
    if isinstance(spot, str) and CARD_ID.match(spot):
        out["spot"] = spot
    return out


def update_view(workshop: Workshop, view: dict) -> dict:
    if not workshop.presenting:
        raise WorkshopError("presenter mode is off: start presenting first", status=409)
    cleaned = clean_view(view)
    seq = int((workshop.present_view or {}).get("seq") or 0) + 1
    workshop.present_view = {**cleaned, "seq": seq}
    workshop.save(update_fields=["present_view"])
    payload = presenter_payload(workshop)
    live.presenter(workshop.pk, payload)
    return {"ok": True, "seq": seq}
