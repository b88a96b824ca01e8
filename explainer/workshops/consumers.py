"""The workshop's WebSockets: the instructor's cockpit and each learner's page.

Both only push; every change is a CSRF-protected POST (views.py). Sockets are checked
by origin (asgi.py: AllowedHostsOriginValidator) and by who is asking:

* cockpit: the logged-in instructor of this workshop (close code 4403 otherwise). On
  "cockpit.changed" it re-reads the snapshot, coalescing bursts (a fault for forty
  learners is one update, not forty), and re-reads it every REFRESH_S anyway, so progress
  saved by another process without a shared channel layer still shows up;
* learner: a participant of this workshop recorded in the session by an HTTP view (close
  4403 otherwise). It hears presenter mode and notices meant for this learner only, and
  its pings are the heartbeat that marks the learner online and keeps their sandbox from
  the idle reaper.
"""
from __future__ import annotations

import asyncio
import contextlib

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from explainer.workshops import identity, selectors
from explainer.workshops.models import Participant, Workshop
from explainer.workshops.services import live, workshops

FORBIDDEN = 4403
GONE = 4410


@database_sync_to_async
def _cockpit_workshop(user, workshop_id: int) -> Workshop | None:
    if not workshops.instructor_can_run(user):
        return None
    return selectors.instructor_workshop(user, workshop_id)


@database_sync_to_async
def _snapshot(workshop_id: int) -> dict | None:
    workshop = Workshop.objects.filter(pk=workshop_id).first()
    return selectors.cockpit(workshop) if workshop else None


class CockpitConsumer(AsyncJsonWebsocketConsumer):
    REFRESH_S = 5.0
    COALESCE_S = 0.2

    async def connect(self):
        self.workshop_id = int(self.scope["url_route"]["kwargs"]["workshop_id"])
        self.pending: asyncio.Task | None = None
        self.refresher: asyncio.Task | None = None
        workshop = await _cockpit_workshop(self.scope.get("user"), self.workshop_id)
        if workshop is None:
            await self.close(code=FORBIDDEN)
            return
        self.group = live.cockpit_group(self.workshop_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_snapshot()
        self.refresher = asyncio.create_task(self._refresh_forever())

    async def disconnect(self, code):
        for task in (self.pending, self.refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("kind") == "ping":
            await self.send_json({"kind": "pong"})

    async def send_snapshot(self):
        snapshot = await _snapshot(self.workshop_id)
        if snapshot is not None:
            await self.send_json(snapshot)

    async def _refresh_forever(self):
        while True:
            await asyncio.sleep(self.REFRESH_S)
            await self.send_snapshot()

    async def _coalesced(self):
        await asyncio.sleep(self.COALESCE_S)
        self.pending = None
        await self.send_snapshot()

    async def cockpit_changed(self, message):
        if self.pending is None:
            self.pending = asyncio.create_task(self._coalesced())


@database_sync_to_async
def _seat(code: str, session) -> Participant | None:
    ids = identity.remembered_participants(session) if session is not None else []
    if not ids:
        return None
    return (Participant.objects.select_related("workshop")
            .filter(pk__in=ids, workshop__code=code.upper()).first())


@database_sync_to_async
def _me(participant_id: int) -> dict | None:
    participant = Participant.objects.select_related("workshop").filter(pk=participant_id).first()
    return selectors.learner_page(participant) if participant else None


class LearnerConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        code = self.scope["url_route"]["kwargs"]["code"]
        participant = await _seat(code, self.scope.get("session"))
        if participant is None:
            await self.close(code=FORBIDDEN)
            return
        self.participant_id = participant.pk
        self.workshop_id = participant.workshop_id
        self.groups_joined = [live.learners_group(self.workshop_id),
                              live.learner_group(self.workshop_id, self.participant_id)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await database_sync_to_async(workshops.page_opened)(self.participant_id)
        me = await _me(self.participant_id)
        await self.send_json({"kind": "hello", "me": me, "present": me["present"]})

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        if hasattr(self, "participant_id"):
            await database_sync_to_async(workshops.page_closed)(self.participant_id)

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("kind") == "ping":
            await database_sync_to_async(workshops.seen)(self.participant_id)
            await self.send_json({"kind": "pong"})

    async def present_update(self, message):
        await self.send_json({"kind": "present", "present": message["present"]})

    async def learner_notice(self, message):
        await self.send_json({"kind": "notice", "text": message["text"],
                              "level": message.get("level", "info"),
                              "me": await _me(self.participant_id)})

    async def workshop_ended(self, message):
        await self.send_json({"kind": "ended", "me": await _me(self.participant_id)})
