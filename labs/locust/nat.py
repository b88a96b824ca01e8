"""Many users behind one address (a NAT or an office proxy) among users with their own.

    locust -f labs/locust/nat.py --headless -u 40 -r 40 -t 30s --host http://127.0.0.1:8080

OfficeUser: three in four users; all of them bind their connections to one loopback
address, LBLAB_NAT_ADDRESS (default 127.0.0.2), so the proxy really sees one client
address for all of them. HomeUser: the rest, each from its own 127.0.0.X. With ip_hash or
source_ip stickiness the whole office lands on one backend (the hot spot this lab shows);
with cookie stickiness or round robin it spreads. Nothing here is a header: no
X-Forwarded-For, which a client could set to anything.
"""
from locust import HttpUser, between, task

from lblab_common import NAT_ADDRESS, bind_source


class Browsing(HttpUser):
    abstract = True
    wait_time = between(0.3, 1.0)

    @task(5)
    def page(self):
        self.client.get("/", name="GET /")

    @task(1)
    def work(self):
        self.client.get("/work?ms=30", name="GET /work")


class OfficeUser(Browsing):
    weight = 3

    def on_start(self):
        bind_source(self, NAT_ADDRESS)


class HomeUser(Browsing):
    weight = 1

    def on_start(self):
        bind_source(self)
