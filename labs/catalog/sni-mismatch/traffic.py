"""HTTPS clients of two sites served by one proxy: www.lab.test and the new shop.lab.test.

    locust -f labs/catalog/sni-mismatch/traffic.py --headless -u 12 -t 5s --host URL

Each user connects to the proxy's address but speaks TLS for its site's name (SNI and
the Host header), and verifies the certificate it gets against the lab CA, as a browser
does: a certificate for another name is refused (the handshake fails on the client).
LBLAB_PKI_DIR is the lab PKI folder (ca.pem); the runner sets it.
"""
import os
from pathlib import Path

from locust import HttpUser, between, task
from locust.clients import LocustHttpAdapter

from lblab_common import next_source_address, target_is_loopback

CA = str(Path(os.environ.get("LBLAB_PKI_DIR", "var/pki")) / "ca.pem")


class NameAdapter(LocustHttpAdapter):
    """Connect to the proxy's address, but ask for (and check) ``name``."""

    def __init__(self, name, source_ip=None):
        self.name, self.source_ip = name, source_ip
        super().__init__(pool_manager=None)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        pool_kwargs["server_hostname"] = self.name
        pool_kwargs["assert_hostname"] = self.name
        if self.source_ip:
            pool_kwargs["source_address"] = (self.source_ip, 0)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


class SiteUser(HttpUser):
    abstract = True
    site = "www.lab.test"
    wait_time = between(0.2, 0.5)

    def on_start(self):
        self.base = self.host.replace("http://", "https://", 1)
        source = next_source_address() if target_is_loopback(self.host) else None
        adapter = NameAdapter(self.site, source)
        self.client.mount("https://", adapter)
        self.client.verify = CA

    @task
    def page(self):
        self.client.get(f"{self.base}/", headers={"Host": self.site}, name=f"GET https://{self.site}/")


class WwwUser(SiteUser):
    site = "www.lab.test"


class ShopUser(SiteUser):
    site = "shop.lab.test"
