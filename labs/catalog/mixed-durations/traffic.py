"""Quick API calls and slow report exports on the same servers.

    locust -f labs/catalog/mixed-durations/traffic.py --headless -u 22 -t 6s --host URL

LBLAB_SLOW_USERS (default 10) users export reports: GET /report?ms=LBLAB_SLOW_MS
(about 1000 ms in the lab: 10 s in production at 1:10; each one from half to one and a
half times that, as real exports vary), one after the other. Everyone
else calls the API: GET /api/lookup?ms=1, a 1 ms lookup, with LBLAB_THINK_S (default
0.05 s) between calls. Each server runs a pool of three worker threads (gunicorn
gthread): a call that finds every thread busy waits in the server's queue.
"""
import random

from locust import HttpUser, between, task

from lblab_common import bind_source, env_float, env_int

SLOW_MS = env_int("LBLAB_SLOW_MS", 1000)
THINK_S = env_float("LBLAB_THINK_S", 0.05)


class ReportExport(HttpUser):
    fixed_count = env_int("LBLAB_SLOW_USERS", 10)
    wait_time = between(0.0, 0.02)

    def on_start(self):
        bind_source(self)

    @task
    def export(self):
        ms = int(SLOW_MS * random.uniform(0.5, 1.5))
        self.client.get(f"/report?ms={ms}", name="GET /report (slow)")


class ApiClient(HttpUser):
    wait_time = between(THINK_S * 0.5, THINK_S * 1.5)

    def on_start(self):
        bind_source(self)

    @task
    def lookup(self):
        self.client.get("/api/lookup?ms=1", name="GET /api/lookup (1 ms)")
