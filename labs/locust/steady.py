"""Steady traffic: every user browses at an even pace (about 2 requests/s each).

    locust -f labs/locust/steady.py --headless -u 10 -r 10 -t 30s --host http://127.0.0.1:8080

Each user connects from its own loopback address (see lblab_common), so hashing balancers
see distinct clients. Requests: the echo page (most), a short piece of work, now and then a
slower one, so least-outstanding and response-time balancers have something to notice.
"""
from locust import HttpUser, between, task

from lblab_common import bind_source, env_int


class Visitor(HttpUser):
    wait_time = between(0.3, 0.7)

    def on_start(self):
        bind_source(self)

    @task(6)
    def page(self):
        self.client.get("/", name="GET /")

    @task(3)
    def work(self):
        self.client.get(f"/work?ms={env_int('LBLAB_WORK_MS', 20)}", name="GET /work")

    @task(1)
    def slow_work(self):
        self.client.get(f"/work?ms={env_int('LBLAB_SLOW_WORK_MS', 200)}", name="GET /work (slow)")
