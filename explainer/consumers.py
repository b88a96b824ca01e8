"""The dashboard's WebSocket: join the sandbox's group, send a first paint, forward ticks.

Only someone who may see the sandbox joins its group (explainer/services/ownership.py,
the same check as the pages); anyone else's handshake is refused before it is accepted,
exactly as for a sandbox that does not exist.
"""
from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from explainer import live
from explainer.services import dashboard, ownership
from explainer.services.sandboxes import group_name


class LabConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.acquired = False
        self.group = None
        self.sandbox = self.scope["url_route"]["kwargs"]["sandbox"]
        found = await database_sync_to_async(ownership.scope_access)(self.scope, self.sandbox)
        if not found.read:
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        self.group = group_name(self.sandbox)
        self.embedded = settings.LBLAB_EMBEDDED_BRIDGE
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        if self.embedded:
            live.bridges().acquire(self.sandbox)
            self.acquired = True
        await self.send_json(await dashboard.first_paint(self.sandbox))

    async def disconnect(self, code):
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if getattr(self, "acquired", False):
            live.bridges().release(self.sandbox)
            self.acquired = False

    async def receive_json(self, content, **kwargs):
        # The page only listens; controls are CSRF-protected POSTs.
        if isinstance(content, dict) and content.get("kind") == "ping":
            await self.send_json({"kind": "pong"})

    async def lab_tick(self, message):
        await self.send_json(dashboard.tick_for_browser(message))
