"""A single-page app: its API calls and its static files, on one host name.

    locust -f labs/catalog/l4-path-routing/traffic.py --headless -u 16 -t 6s --host URL

b1 and b2 run the API; b3 and b4 serve the static files. Every toy backend answers any
path (it is a toy), so each request checks *who* answered (the X-Backend header) and
counts an answer from the wrong kind of server as the failure it would be in production:
a 404 from a static server asked for /api/orders, or the API asked for /static/app.js.
"""
from locust import HttpUser, between, task

from lblab_common import bind_source

API, STATIC = {"b1", "b2"}, {"b3", "b4"}


class Browser(HttpUser):
    wait_time = between(0.2, 0.5)

    def on_start(self):
        bind_source(self)

    def _get(self, path, name, expect, kind):
        with self.client.get(path, name=name, catch_response=True) as resp:
            served = resp.headers.get("X-Backend", "?")
            if resp.status_code >= 400:
                resp.failure(f"status {resp.status_code}")
            elif served not in expect:
                resp.failure(f"{kind} request answered by {served}: a 404 in production")

    @task(2)
    def api(self):
        self._get("/api/orders", "GET /api/orders", API, "API")

    @task(1)
    def static(self):
        self._get("/static/app.js", "GET /static/app.js", STATIC, "static")
