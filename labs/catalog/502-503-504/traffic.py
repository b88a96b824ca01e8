"""Shop traffic: pages (pool web) and the reports page (pool reports, one backend).

    locust -f labs/catalog/502-503-504/traffic.py --headless -u 12 -t 8s --host URL
"""
from locust import HttpUser, between, task

from lblab_common import bind_source


class Shopper(HttpUser):
    wait_time = between(0.2, 0.5)

    def on_start(self):
        bind_source(self)

    @task(3)
    def page(self):
        self.client.get("/shop", name="GET /shop")

    @task(1)
    def report(self):
        self.client.get("/reports/daily", name="GET /reports/daily")
