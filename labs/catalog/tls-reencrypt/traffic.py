"""HTTPS customers of www.lab.test, checking the balancer's certificate like a browser.

    locust -f labs/catalog/tls-reencrypt/traffic.py --headless -u 10 -t 5s --host URL

Each user connects to the proxy's address, asks for www.lab.test (SNI and Host) and
verifies the certificate against the lab CA (LBLAB_PKI_DIR/ca.pem; the runner sets it).
Requests are named by the server that answered (X-Backend), so the run's statistics
show who got the customers' traffic.
"""
import os
from pathlib import Path

from locust import HttpUser, between, task
from locust.clients import LocustHttpAdapter

from lblab_common import next_source_address, target_is_loopback

CA = str(Path(os.environ.get("LBLAB_PKI_DIR", "var/pki")) / "ca.pem")
SITE = "www.lab.test"


class NameAdapter(LocustHttpAdapter):
    """Connect to the proxy's address, but ask for (and check) the site's name."""

    def __init__(self, source_ip=None):
        self.source_ip = source_ip
        super().__init__(pool_manager=None)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        pool_kwargs["server_hostname"] = SITE
        pool_kwargs["assert_hostname"] = SITE
        if self.source_ip:
            pool_kwargs["source_address"] = (self.source_ip, 0)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


class Customer(HttpUser):
    wait_time = between(0.05, 0.15)

    def on_start(self):
        self.base = self.host.replace("http://", "https://", 1)
        source = next_source_address() if target_is_loopback(self.host) else None
        self.client.mount("https://", NameAdapter(source))
        self.client.verify = CA

    @task
    def checkout(self):
        self.client.get(f"{self.base}/checkout", headers={"Host": SITE},
                        name="GET https://www.lab.test/checkout")
