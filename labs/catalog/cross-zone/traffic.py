"""Clients spread evenly over the balancer's two nodes (one listener per zone).

    LBLAB_LISTENERS='{"node-a": "http://127.0.0.1:8080", "node-b": "http://127.0.0.1:8081"}' \
    locust -f labs/catalog/cross-zone/traffic.py --headless -u 16 -t 6s --host URL

DNS for a cloud balancer's name answers with one address per zone's node, and clients
spread over them about evenly: here users take turns, the first half of each pair on
node-a, the other on node-b (LBLAB_LISTENERS, which the lab runner sets: every listener's
URL by name). Each user calls GET /work?ms=LBLAB_WORK_MS (default 20) with LBLAB_THINK_S
(default 0.05 s) between calls; each request is counted under its node's name.
"""
import itertools
import json
import os

from locust import HttpUser, between, task

from lblab_common import bind_source, env_float, env_int

WORK_MS = env_int("LBLAB_WORK_MS", 20)
THINK_S = env_float("LBLAB_THINK_S", 0.05)
_NODES = sorted(json.loads(os.environ.get("LBLAB_LISTENERS") or "{}").items())
_turn = itertools.count()


class ZoneClient(HttpUser):
    wait_time = between(THINK_S * 0.5, THINK_S * 1.5)

    def on_start(self):
        if _NODES:
            self.node, self.host = _NODES[next(_turn) % len(_NODES)]
            self.client.base_url = self.host
        else:
            self.node = "host"
        bind_source(self)

    @task
    def work(self):
        self.client.get(f"/work?ms={WORK_MS}", name=f"GET /work via {self.node}")
