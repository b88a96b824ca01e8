"""Users of one office behind a NAT (one address), and users at home (one address each).

    locust -f labs/catalog/ip-hash-nat/traffic.py --headless -u 48 -t 8s --host URL

Three users in four are in the office: their connections all come from LBLAB_NAT_ADDRESS
(127.0.0.2), as behind a real NAT. Every user has an account id, sent the way the app
sends it (an ``X-User-Id`` header) and, for the lab's grader, in the query string: that
is how the recording tells which *user* moved when the pool changed.
"""
import itertools

from locust import HttpUser, between, task

from lblab_common import NAT_ADDRESS, bind_source

_ids = itertools.count()


class Customer(HttpUser):
    abstract = True
    wait_time = between(0.3, 0.6)

    def on_start(self):
        self.uid = f"u{next(_ids):03d}"
        self.bind()

    @task
    def page(self):
        self.client.get(f"/item?user={self.uid}", headers={"X-User-Id": self.uid},
                        name="GET /item")


class OfficeUser(Customer):
    weight = 3

    def bind(self):
        bind_source(self, NAT_ADDRESS)


class HomeUser(Customer):
    weight = 1

    def bind(self):
        bind_source(self)
