"""python manage.py bridge: the proxy's event stream -> coalesced ticks -> Channels group.

The logic is explainer/bridge.py; this only reads options and runs it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from explainer.bridge import Bridge, channel_sender
from explainer.services import sandboxes


class Command(BaseCommand):
    help = ("Stream a sandbox proxy's events to the dashboard: coalesce them per tick and "
            "group_send to the Channels group sandbox.<id>.")

    def add_arguments(self, parser):
        parser.add_argument("--admin-url", help="the proxy's admin API, e.g. http://127.0.0.1:9900 "
                            "(default: ask SandboxService for the sandbox's)")
        parser.add_argument("--sandbox", default=settings.LBLAB_SANDBOX,
                            help="sandbox id; ticks go to group sandbox.<id> (default %(default)s)")
        parser.add_argument("--tick-ms", type=int, default=250, help="tick length (default 250)")
        parser.add_argument("--decisions", type=int, default=50,
                            help="request events kept per tick (default 50)")
        parser.add_argument("--print", action="store_true", dest="print_only",
                            help="print a line per tick instead of sending (no channel layer)")

    def handle(self, *args, **opts):
        sandbox_id = opts["sandbox"]
        try:
            sandboxes.check_id(sandbox_id)
        except sandboxes.SandboxError as exc:
            raise CommandError(exc.message) from None
        backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
        if not opts["print_only"] and backend.endswith("InMemoryChannelLayer"):
            raise CommandError(
                "the channel layer is in-memory (no REDIS_URL): it only reaches consumers in "
                "its own process, so a separate bridge cannot reach the site. Either set "
                "REDIS_URL (e.g. redis://127.0.0.1:6379/0) for both daphne and this command, or "
                "leave the bridge to daphne (LBLAB_EMBEDDED_BRIDGE=1, the default without "
                "REDIS_URL). Use --print to watch ticks here.")
        if opts["tick_ms"] < 20:
            raise CommandError("--tick-ms must be at least 20")
        admin_url = opts["admin_url"]
        if admin_url:
            url_source = admin_url.rstrip("/")
        else:
            def url_source() -> str:
                return sandboxes.get_sandbox(sandbox_id).admin_url

        send = self._printer() if opts["print_only"] else channel_sender(sandbox_id)
        bridge = Bridge(sandbox_id, url_source, send, tick_s=opts["tick_ms"] / 1000.0,
                        decisions_per_tick=opts["decisions"],
                        parts=lambda: sandboxes.parts_of(sandbox_id))
        logging.getLogger("explainer").setLevel(logging.INFO)
        target = "stdout" if opts["print_only"] else f"group sandbox.{sandbox_id}"
        self.stderr.write(f"bridge: {admin_url or 'sandbox ' + sandbox_id} -> {target} "
                          f"every {opts['tick_ms']} ms (Ctrl-C stops)")
        asyncio.run(self._run_until_signalled(bridge))
        self.stderr.write("bridge: stopped")

    async def _run_until_signalled(self, bridge: Bridge) -> None:
        # SIGTERM (the launcher, compose) and Ctrl-C end the bridge cleanly.
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await bridge.run()
        except asyncio.CancelledError:
            pass

    def _printer(self):
        async def send(message: dict) -> None:
            totals = message["stats"]["totals"]
            summary = {"seq": message["seq"], "proxy": message["proxy"]["reachable"],
                       "requests": totals.get("requests", 0), "errors": totals.get("errors", 0),
                       "events": [f"{e.get('type')}:{e.get('backend') or e.get('verb') or ''}"
                                  for e in message["events"]]}
            self.stdout.write(json.dumps(summary))
            self.stdout.flush()
        return send
