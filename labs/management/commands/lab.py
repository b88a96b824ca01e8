"""python manage.py lab: start the whole lab locally and supervise it (Ctrl-C stops it).

The logic lives in labs/sandbox/launcher.py (also runnable as python -m labs.sandbox.launcher);
this command only hands over the options.
"""
from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from labs.sandbox.launcher import Launcher, LaunchError, add_arguments, options_from


class Command(BaseCommand):
    help = ("Start LBLab: a sandbox (proxy + toy backends), the site on daphne (and the bridge "
            "as a process when REDIS_URL is set); print the URL and supervise until Ctrl-C.")
    requires_system_checks = []  # the site process runs its own checks

    def add_arguments(self, parser):
        add_arguments(parser)

    def handle(self, *args, **opts):
        try:
            code = Launcher(options_from(opts), out=sys.stdout).run()
        except LaunchError as exc:
            raise CommandError(str(exc)) from None
        if code:
            raise SystemExit(code)
