"""The cockpit's and the learners' WebSockets, through Channels' WebsocketCommunicator."""
import asyncio

import pytest
import pytest_asyncio
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore

from explainer.workshops.consumers import CockpitConsumer, LearnerConsumer
from explainer.workshops.identity import SESSION_PARTICIPANTS
from explainer.workshops.models import Participant
from explainer.workshops.services import workshops
from lblab.asgi import application

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture(autouse=True)
async def close_consumer_connections():
    """Drop the database connection the consumers opened in asgiref's sync thread.

    Channels checks old connections in that thread before each message; left open, the
    next test without database access (tests/explainer/test_consumers.py) would trip
    pytest-django's guard there. SQLite's close() ignores in-memory test databases on
    purpose (the main thread's connection keeps the shared database alive), so the
    thread's own connection is closed with the base class's close()."""
    yield

    def drop():
        from django.db import connections
        from django.db.backends.base.base import BaseDatabaseWrapper

        for conn in connections.all(initialized_only=True):
            if conn.connection is not None:
                BaseDatabaseWrapper.close(conn)

    await database_sync_to_async(drop)()


def cockpit(workshop_id, user):
    comm = WebsocketCommunicator(CockpitConsumer.as_asgi(), f"/ws/workshops/{workshop_id}/cockpit/")
    comm.scope["url_route"] = {"kwargs": {"workshop_id": str(workshop_id)}}
    comm.scope["user"] = user
    return comm


@database_sync_to_async
def session_for(*participant_ids):
    session = SessionStore()
    session[SESSION_PARTICIPANTS] = list(participant_ids)
    session.save()
    return SessionStore(session_key=session.session_key)


def learner(code, session):
    comm = WebsocketCommunicator(LearnerConsumer.as_asgi(), f"/ws/workshops/w/{code}/")
    comm.scope["url_route"] = {"kwargs": {"code": code}}
    comm.scope["session"] = session
    comm.scope["user"] = AnonymousUser()
    return comm


async def receive_until(comm, predicate, timeout=8.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError("no matching message")
        message = await comm.receive_json_from(timeout=left)
        if predicate(message):
            return message


join = database_sync_to_async(lambda w, key, name: workshops.join(workshop=w, learner_key=key,
                                                                  display_name=name)[0])


async def test_cockpit_refuses_anyone_but_the_workshops_instructor(workshop, other_instructor):
    for user in (AnonymousUser(), other_instructor):
        comm = cockpit(workshop.pk, user)
        connected, code = await comm.connect()
        assert not connected and code == 4403


async def test_cockpit_goes_live_on_joins_hands_and_presence(workshop, instructor):
    comm = cockpit(workshop.pk, instructor)
    connected, _ = await comm.connect()
    assert connected
    first = await comm.receive_json_from(timeout=5)
    assert first["kind"] == "cockpit" and first["workshop"]["code"] == workshop.code
    assert first["learners"] == []

    ada = await join(workshop, "session:ws-ada", "Ada")
    snap = await receive_until(comm, lambda m: any(r["name"] == "Ada" for r in m["learners"]))
    assert snap["activity"][0]["text"] == "Ada joined"

    await database_sync_to_async(workshops.set_hand)(ada, True)
    snap = await receive_until(comm, lambda m: m["counts"]["hands"] == 1)
    assert snap["learners"][0]["hand_raised_at"]

    # The learner's page opening marks them online in the cockpit.
    page = learner(workshop.code, await session_for(ada.pk))
    assert (await page.connect())[0]
    await page.receive_json_from(timeout=5)  # hello
    snap = await receive_until(comm, lambda m: m["counts"]["online"] == 1)
    await page.disconnect()
    snap = await receive_until(comm, lambda m: m["counts"]["online"] == 0)
    await comm.disconnect()


async def test_bursts_are_coalesced(workshop, instructor):
    comm = cockpit(workshop.pk, instructor)
    await comm.connect()
    await comm.receive_json_from(timeout=5)
    for i in range(6):
        await join(workshop, f"session:burst-{i}", f"L{i}")
    snap = await receive_until(comm, lambda m: m["counts"]["learners"] == 6)
    assert snap["counts"]["learners"] == 6
    # Six joins within the coalescing window are one or two snapshots, not six.
    extra = 0
    while not await comm.receive_nothing(timeout=0.5):
        await comm.receive_json_from()
        extra += 1
    assert extra <= 1
    await comm.disconnect()


async def test_cockpit_refreshes_even_without_a_message(workshop, instructor, monkeypatch):
    monkeypatch.setattr(CockpitConsumer, "REFRESH_S", 0.3)
    comm = cockpit(workshop.pk, instructor)
    await comm.connect()
    await comm.receive_json_from(timeout=5)
    # A write that sends nothing (as another process without a shared layer would).
    await database_sync_to_async(Participant.objects.create)(
        workshop=workshop, learner_key="session:silent", display_name="Silent")
    snap = await receive_until(comm, lambda m: m["counts"]["learners"] == 1, timeout=3)
    assert snap["learners"][0]["name"] == "Silent"
    await comm.disconnect()


async def test_learner_socket_needs_a_seat_in_this_workshop(workshop, instructor):
    other = await database_sync_to_async(workshops.create_workshop)(instructor=instructor,
                                                                    title="Other")
    ada = await join(other, "session:seat-ada", "Ada")
    for session in (SessionStore(), await session_for(ada.pk)):
        comm = learner(workshop.code, session)
        connected, code = await comm.connect()
        assert not connected and code == 4403


async def test_learners_follow_the_presenter_and_get_their_own_notices(workshop):
    ada = await join(workshop, "session:pr-ada", "Ada")
    ben = await join(workshop, "session:pr-ben", "Ben")
    pages = {p.display_name: learner(workshop.code, await session_for(p.pk)) for p in (ada, ben)}
    for name, page in pages.items():
        assert (await page.connect())[0]
        hello = await page.receive_json_from(timeout=5)
        assert hello["kind"] == "hello" and hello["me"]["me"]["name"] == name
        assert hello["present"]["on"] is False

    await database_sync_to_async(workshops.start_presenting)(workshop)
    for page in pages.values():
        msg = await receive_until(page, lambda m: m["kind"] == "present")
        assert msg["present"]["on"] and msg["present"]["screen_url"].endswith("/screen/")
    await database_sync_to_async(workshops.update_view)(workshop, {"tab": "tab-faults",
                                                                   "scroll": 0.4})
    for page in pages.values():
        msg = await receive_until(page, lambda m: m["kind"] == "present")
        assert msg["present"]["view"] == {"tab": "tab-faults", "scroll": 0.4, "seq": 1}

    # A notice for Ada reaches Ada only.
    from explainer.workshops.services import live
    await database_sync_to_async(live.notice)(workshop.pk, ada.pk, "only for Ada")
    msg = await receive_until(pages["Ada"], lambda m: m["kind"] == "notice")
    assert msg["text"] == "only for Ada" and msg["me"]["me"]["name"] == "Ada"
    assert await pages["Ben"].receive_nothing(timeout=0.4)

    # Pings are the heartbeat.
    await pages["Ben"].send_json_to({"kind": "ping"})
    assert (await pages["Ben"].receive_json_from(timeout=3)) == {"kind": "pong"}

    await database_sync_to_async(workshops.stop_presenting)(workshop)
    for page in pages.values():
        msg = await receive_until(page, lambda m: m["kind"] == "present")
        assert msg["present"]["on"] is False
        await page.disconnect()


async def test_through_the_asgi_router_with_cookies_and_origin(workshop, instructor):
    from django.conf import settings
    from django.test import Client

    c = Client(HTTP_HOST="127.0.0.1")
    await database_sync_to_async(c.force_login)(instructor)
    cookie = f"{settings.SESSION_COOKIE_NAME}={c.cookies[settings.SESSION_COOKIE_NAME].value}"
    path = f"/ws/workshops/{workshop.pk}/cockpit/"
    good = WebsocketCommunicator(application, path, headers=[
        (b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
    assert (await good.connect())[0]
    assert (await good.receive_json_from(timeout=5))["kind"] == "cockpit"
    await good.disconnect()
    # Another site's page cannot open the socket with the instructor's cookie.
    evil = WebsocketCommunicator(application, path, headers=[
        (b"origin", b"http://evil.example"), (b"host", b"127.0.0.1"), (b"cookie", cookie.encode())])
    assert not (await evil.connect())[0]
