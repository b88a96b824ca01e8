"""Clients that come back about once a second: the idle gaps the keep-alive race needs.

    locust -f labs/catalog/keepalive-race/traffic.py --headless -u 40 -t 8s --host URL

Each user sends a GET every LBLAB_GAP_MIN_S..LBLAB_GAP_MAX_S seconds (default 1.0-1.4):
the proxy's pooled connections to the backends sit idle for about as long as gunicorn's
keep-alive timeout (1 s in the lab), so some are reused just as gunicorn closes them.
"""
from locust import HttpUser, between, task

from lblab_common import bind_source, env_float


class Poller(HttpUser):
    wait_time = between(env_float("LBLAB_GAP_MIN_S", 1.0), env_float("LBLAB_GAP_MAX_S", 1.4))

    def on_start(self):
        bind_source(self)

    @task
    def poll(self):
        self.client.get("/api/status?ms=5", name="GET /api/status")
