"""Busy API clients: short requests back to back (a little think time), each ~10 ms of work.

    locust -f labs/catalog/slow-backend-p99/traffic.py --headless -u 20 -t 6s --host URL

LBLAB_WORK_MS (default 10) is the work per request; LBLAB_THINK_S (default 0.1) the mean
pause between a user's requests. At 20 users that is ~170 requests/s: enough that a
backend which serves fewer than a quarter of them builds a queue under round robin.
"""
from locust import HttpUser, between, task

from lblab_common import bind_source, env_float, env_int


class ApiClient(HttpUser):
    wait_time = between(env_float("LBLAB_THINK_S", 0.1) * 0.5, env_float("LBLAB_THINK_S", 0.1) * 1.5)

    def on_start(self):
        bind_source(self)

    @task
    def work(self):
        self.client.get(f"/work?ms={env_int('LBLAB_WORK_MS', 10)}", name="GET /work")
