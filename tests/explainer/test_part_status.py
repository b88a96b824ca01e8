"""The dashboard's parts panel API: what died, since when, and who may restart it.

``noticed`` (when a part was first seen dead) is pure and tested with a fake clock; the
endpoint runs against a real supervised sandbox (the ``managed`` fixture), killed by pid.
"""
import os
import signal

from django.test import Client

from explainer.services.parts import noticed
from tests.explainer.parts import wait_until
from tests.explainer.test_managed_sandbox import managed, post  # noqa: F401 (fixture)


def test_a_death_keeps_the_time_it_was_first_seen_until_the_part_runs_again():
    table = {}
    up = {"alive": True, "detail": "pid 1"}
    down = {"alive": False, "detail": "not running (pid 1 is gone)"}
    assert noticed("s", {"b1": up}, table, now=100.0)["b1"]["since"] is None
    assert noticed("s", {"b1": down}, table, now=105.0)["b1"]["since"] == 105.0
    assert noticed("s", {"b1": down}, table, now=110.0)["b1"]["since"] == 105.0
    assert noticed("other", {"b1": down}, table, now=111.0)["b1"]["since"] == 111.0
    assert noticed("s", {"b1": up}, table, now=120.0)["b1"]["since"] is None
    assert noticed("s", {"b1": down}, table, now=130.0)["b1"]["since"] == 130.0  # a new death
    noticed("s", {}, table, now=140.0)  # b1 was removed from the sandbox
    assert ("s", "b1") not in table and ("other", "b1") in table


def test_the_owner_sees_the_dead_part_and_may_restart_it(managed):  # noqa: F811
    client = Client(enforce_csrf_checks=True)
    body = client.get("/api/expl/parts").json()
    assert body["managed"] and body["can_change"] is True
    assert {name for name, p in body["parts"].items() if p["alive"]} == {"proxy", "b1", "b2"}

    os.kill(managed.pids["b1"], signal.SIGKILL)
    # While the kernel tears the process down its sockets close before its pid goes, so
    # the first "dead" answer may still say "runs but ... refused": wait for the last word.
    def b1_gone():
        b1 = client.get("/api/expl/parts").json()["parts"]["b1"]
        return b1 if not b1["alive"] and "is gone" in b1["detail"] else None
    dead = wait_until(b1_gone, 10, what="b1 seen gone")
    assert f"pid {managed.pids['b1']} is gone" in dead["detail"] and dead["since"] > 0

    status, body = post(client, "restart", {"backend": "b1"})
    assert status == 200, body
    again = client.get("/api/expl/parts").json()["parts"]["b1"]
    assert again["alive"] is True and again["since"] is None


def test_a_read_only_visitor_sees_the_parts_but_may_not_restart(managed, settings):  # noqa: F811
    settings.LBLAB_DEFAULT_SANDBOX_WRITERS = "staff"
    client = Client(enforce_csrf_checks=True)
    body = client.get("/api/expl/parts").json()
    assert body["can_change"] is False and body["parts"]["proxy"]["alive"] is True
    status, body = post(client, "restart", {"backend": "proxy"})
    assert status == 403 and body["errors"][0]["path"] == "sandbox"


def test_someone_elses_sandbox_is_a_404(managed):  # noqa: F811
    assert Client().get("/api/lab-not-mine/parts").status_code == 404
