"""Clients spread over several balancers: user N talks to balancer N mod 3.

    (run by the lab runner, which sets LBLAB_PROXIES: {"lb1": URL, ...})

Each user calls GET /work?ms=LBLAB_WORK_MS (default 50 ms) with LBLAB_THINK_S (default
0.1 s) between calls, always through the same balancer, as clients behind a DNS name
with three addresses each keep the one they were given.
"""
import itertools
import json
import os

from locust import HttpUser, between, task

from lblab_common import bind_source, env_float, env_int

PROXIES = json.loads(os.environ.get("LBLAB_PROXIES") or "{}")
WORK_MS = env_int("LBLAB_WORK_MS", 50)
THINK_S = env_float("LBLAB_THINK_S", 0.1)
_turn = itertools.count()


class ApiClient(HttpUser):
    wait_time = between(THINK_S * 0.5, THINK_S * 1.5)

    def on_start(self):
        bind_source(self)
        names = sorted(PROXIES) or [""]
        self.via = names[next(_turn) % len(names)]
        self.base = PROXIES.get(self.via, self.host)

    @task
    def work(self):
        self.client.get(f"{self.base}/work?ms={WORK_MS}", name=f"GET /work via {self.via}")
