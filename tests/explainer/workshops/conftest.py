"""Fixtures for the workshops: an instructor, a workshop, learners with their own sessions,
and (for the tests that need them) real sandboxes in a private state directory."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from explainer.workshops.management.commands.createinstructor import instructors_group
from explainer.workshops.services import workshops

PASSWORD = "Workshop-pass-4821"


def client() -> Client:
    return Client(HTTP_HOST="127.0.0.1")


@pytest.fixture
def instructor(db):
    user = get_user_model().objects.create_user("ines", password=PASSWORD)
    user.groups.add(instructors_group())
    return get_user_model().objects.get(pk=user.pk)  # fresh permission cache


@pytest.fixture
def other_instructor(db):
    user = get_user_model().objects.create_user("otto", password=PASSWORD)
    user.groups.add(instructors_group())
    return get_user_model().objects.get(pk=user.pk)


@pytest.fixture
def workshop(instructor):
    return workshops.create_workshop(instructor=instructor, title="Load balancing 101")


@pytest.fixture
def instructor_client(instructor):
    c = client()
    assert c.login(username="ines", password=PASSWORD)
    return c


def join_as(workshop, name: str) -> Client:
    """A learner with their own browser session who joined `workshop` as `name`."""
    c = client()
    resp = c.post("/workshops/join/", {"code": workshop.code, "display_name": name})
    assert resp.status_code == 302, resp.content.decode()[:500]
    return c


@pytest.fixture
def sandbox_settings(settings, tmp_path):
    """Learner sandboxes in a private state dir, two backends each, a cap of two."""
    settings.LBLAB_LABS_STATE_DIR = str(tmp_path / "state")
    settings.LBLAB_LABS_MAX_SANDBOXES = 2
    settings.LBLAB_WORKSHOP_BACKENDS = 2
    settings.LBLAB_ADMIN_TIMEOUT = 2.0
    yield settings
    from explainer.workshops.services.sandboxes import service

    svc = service()
    for sb in svc.list():
        svc.stop(sb.id, grace=2.0)
