"""Progress saved by the course or the labs reaches the cockpits of the learner's workshops.

Connected in WorkshopsConfig.ready() to each progress model (progress.models_with_keys()).
The receiver pokes the cockpit of every open workshop the learner sits in and, for
things an instructor wants to hear about (a lesson opened or completed, a check answered,
a drill graded, a prediction scored, a lab run started or finished), writes one Activity
line. A cockpit also re-reads progress every few seconds (consumers.py): that covers
saves made by processes that share no channel layer with the cockpit's.
"""
from __future__ import annotations

import logging

from django.db.models.signals import post_save

from explainer.workshops import progress
from explainer.workshops.identity import variants

log = logging.getLogger("explainer.workshops")


def connect() -> None:
    for model, key_field in progress.models_with_keys():
        post_save.connect(on_progress_saved, sender=model, weak=False,
                          dispatch_uid=f"workshops-progress-{model._meta.label_lower}")


def describe(name: str, sender, row, created: bool) -> tuple[str, bool | None] | None:
    """The Activity line for this save, or None when it is not worth a line."""
    label = sender._meta.label
    if label == "labs.LabRun":
        title = progress.lab_title(row.slug)
        if row.state in ("queued", "running"):
            return (f"{name} started a run of the lab {title}", None) if created else None
        if row.state == "done":
            if row.passed:
                return f"{name} passed the lab {title}", True
            return f"{name}'s run of the lab {title} did not pass" + (
                f": {row.headline[:120]}" if row.headline else ""), False
        return f"{name}'s run of the lab {title} {row.state}" + (
            f": {row.headline[:120]}" if row.headline else ""), False
    if label == "labs.LabProgress":
        return None  # its runs say it better (LabRun above)
    source = progress.source_for(sender)
    if source is None:
        return None
    item = source.item(row)
    if item.kind == "lesson":
        if item.passed:
            return f"{name} completed the lesson {item.title}", True
        return (f"{name} opened the lesson {item.title}", None) if created else None
    if item.kind == "check":
        if not row.attempts:  # the row was just made, the answer is saved next
            return None
        return (f"{name} answered a check in {progress.lesson_title(row.lesson_slug)}: "
                f"{'right' if item.passed else 'wrong'}"), item.passed
    if item.kind == "drill":
        if item.passed is None:
            return (f"{name} wrote an answer to the drill “{item.title}”", None) if created \
                else None
        return f"{name} {'passed' if item.passed else 'failed'} the drill “{item.title}” " \
               f"({item.step})", item.passed
    if item.kind == "predict":
        if item.passed is None:
            return f"{name}'s prediction run of {item.title} broke", None
        return f"{name}'s prediction for {item.title}: {item.step}", item.passed
    return None


def on_progress_saved(sender, instance, created=False, **kwargs) -> None:
    try:
        _record(sender, instance, created)
    except Exception:  # the learner's save succeeded; a cockpit line is not worth failing it
        log.exception("could not tell workshops about %s of %s", sender.__name__,
                      getattr(instance, "pk", "?"))


def _record(sender, instance, created: bool) -> None:
    from explainer.workshops.models import Activity, Participant
    from explainer.workshops.services import live
    from explainer.workshops.services.workshops import record

    key_field = "learner" if sender._meta.app_label == "labs" else "learner_key"
    key = getattr(instance, key_field, None)
    if not key:
        return
    seats = list(Participant.objects.filter(learner_key__in=variants(key),
                                            workshop__ended_at__isnull=True)
                 .select_related("workshop"))
    for participant in seats:
        line = describe(participant.display_name, sender, instance, created)
        if line is None:
            live.cockpit_changed(participant.workshop_id, "progress")
        else:
            text, ok = line
            record(participant.workshop, Activity.Kind.PROGRESS, text, participant, ok=ok)
