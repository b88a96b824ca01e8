"""Checkout clients: steady requests of about LBLAB_WORK_MS (default 10) ms each.

    locust -f labs/catalog/canary-rollback/traffic.py --headless -u 16 -t 6s --host URL

LBLAB_THINK_S (default 0.05 s) is the mean pause between a user's requests. Which
version answers is the balancer's choice (the canary's weight); the clients do not know.
"""
from locust import HttpUser, between, task

from lblab_common import bind_source, env_float, env_int

THINK_S = env_float("LBLAB_THINK_S", 0.05)
WORK_MS = env_int("LBLAB_WORK_MS", 10)


class Shopper(HttpUser):
    wait_time = between(THINK_S * 0.5, THINK_S * 1.5)

    def on_start(self):
        bind_source(self)

    @task
    def checkout(self):
        self.client.get(f"/work?ms={WORK_MS}", name="GET /work (checkout)")
