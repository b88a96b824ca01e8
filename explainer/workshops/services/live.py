"""Telling open pages that something changed, over the channel layer.

Three groups per workshop:

* ``workshop.<id>.cockpit``   the instructor's cockpit(s): "something changed, re-read"
                              (the consumer coalesces and sends a fresh snapshot);
* ``workshop.<id>.learners``  every learner's page: presenter mode on/off and its view;
* ``workshop.<id>.p.<pid>``   one learner's page: notices meant for them alone (a fault
                              injected into their sandbox, the workshop ended).

Messages are sent after the database transaction commits, because consumers re-read the
database on receipt. With the in-memory layer only pages served by this same process
hear them; REDIS_URL makes them reach every process (settings.py).
"""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger("explainer.workshops")


def cockpit_group(workshop_id: int) -> str:
    return f"workshop.{workshop_id}.cockpit"


def learners_group(workshop_id: int) -> str:
    return f"workshop.{workshop_id}.learners"


def learner_group(workshop_id: int, participant_id: int) -> str:
    return f"workshop.{workshop_id}.p.{participant_id}"


def _send_now(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:  # no CHANNEL_LAYERS: pages still get fresh data when they reload
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception as exc:  # a full or unreachable layer must not fail the learner's request
        log.warning("could not notify %s (%s: %s); open pages catch up on their next refresh",
                    group, type(exc).__name__, exc)


def send(group: str, message: dict) -> None:
    transaction.on_commit(lambda: _send_now(group, message))


def cockpit_changed(workshop_id: int, reason: str = "") -> None:
    send(cockpit_group(workshop_id), {"type": "cockpit.changed", "reason": reason})


def presenter(workshop_id: int, payload: dict) -> None:
    send(learners_group(workshop_id), {"type": "present.update", "present": payload})


def notice(workshop_id: int, participant_id: int, text: str, level: str = "info") -> None:
    send(learner_group(workshop_id, participant_id),
         {"type": "learner.notice", "text": text, "level": level})


def workshop_ended(workshop_id: int) -> None:
    send(learners_group(workshop_id), {"type": "workshop.ended"})
    cockpit_changed(workshop_id, "ended")
