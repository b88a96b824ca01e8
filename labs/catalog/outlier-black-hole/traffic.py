"""Busy API clients: requests that take ~30 ms of real work each.

    locust -f labs/catalog/outlier-black-hole/traffic.py --headless -u 16 -t 6s --host URL

LBLAB_WORK_MS (default 30) is the work per request and LBLAB_THINK_S (default 0.05 s)
the mean pause between a user's requests. A healthy server holds each request for the
work's duration; a server that fails at once holds none.
"""
from locust import HttpUser, between, task

from lblab_common import bind_source, env_float, env_int

THINK_S = env_float("LBLAB_THINK_S", 0.05)


class ApiClient(HttpUser):
    wait_time = between(THINK_S * 0.5, THINK_S * 1.5)

    def on_start(self):
        bind_source(self)

    @task
    def orders(self):
        self.client.get(f"/work?ms={env_int('LBLAB_WORK_MS', 30)}", name="GET /work (orders)")
