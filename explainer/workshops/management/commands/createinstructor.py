"""Make (or promote) an instructor account: a Django user allowed to run workshops.

    python manage.py createinstructor alice                  # asks for a password
    echo "$PW" | python manage.py createinstructor alice --password-stdin
    python manage.py createinstructor bob --existing         # promote an existing user

An instructor is a user in the "Instructors" group, which holds the permission
workshops.run_workshop. Superusers (createsuperuser) have every permission, so they can
run workshops too. Instructors need no access to /admin/ (they are not staff).
"""
from __future__ import annotations

import getpass
import sys

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

GROUP = "Instructors"


def instructors_group() -> Group:
    group, _ = Group.objects.get_or_create(name=GROUP)
    permission = Permission.objects.get(codename="run_workshop", content_type__app_label="workshops")
    group.permissions.add(permission)
    return group


class Command(BaseCommand):
    help = "Create an instructor account (or promote an existing user with --existing)."
    stealth_options = ("stdin",)  # call_command(..., stdin=...) in tests

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of standard input")
        parser.add_argument("--existing", action="store_true",
                            help="the user exists already: only make them an instructor")

    def _password(self, options, user) -> str:
        stdin = options.get("stdin") or sys.stdin
        if options["password_stdin"]:
            password = stdin.readline().rstrip("\r\n")
        else:
            if not stdin.isatty():
                raise CommandError("no terminal to ask for a password: pipe it in with "
                                   "--password-stdin")
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("the two passwords differ; run the command again")
        if not password:
            raise CommandError("the password is empty")
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("password refused: " + " ".join(exc.messages)) from None
        return password

    def handle(self, *args, **options):
        User = get_user_model()
        username = options["username"].strip()
        if not username:
            raise CommandError("give a username")
        existing = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if options["existing"]:
            if existing is None:
                raise CommandError(f"no user {username!r}; leave out --existing to create one")
            user = existing
        else:
            if existing is not None:
                raise CommandError(f"user {username!r} exists already; add --existing to make "
                                   "them an instructor")
            user = User(**{User.USERNAME_FIELD: username}, email=options["email"])
            user.set_password(self._password(options, user))
        with transaction.atomic():
            user.save()
            user.groups.add(instructors_group())
        self.stdout.write(self.style.SUCCESS(
            f"{username} is an instructor: log in at /workshops/login/ and create a workshop."))
