"""Office clients through the floating address, app clients through DNS round robin.

    (run by the lab runner: it sets LBLAB_PROXIES, LBLAB_FLOATING, LBLAB_SETTINGS,
    LBLAB_ZONE and LBLAB_CLIENT_LOG; see labs/framework/pair.py)

LBLAB_VIP_USERS (default 8) users call GET /work?ms=LBLAB_WORK_MS through the floating
address. The others resolve the service through the zone the runner keeps (zone.json),
cache the answer for lab.dns.ttl_s (failover.ResolverCache), and send each request to one
address of the answer picked at random, without trying the other one when it is refused
(as many HTTP client libraries do). Every request and every DNS query is written to the
client log: a refused connection reaches no balancer, so only the client can tell it.
"""
import itertools
import json
import os
import random
import time

from locust import HttpUser, between, task

from labs.framework.failover import ResolverCache
from lblab_common import bind_source, env_float, env_int

FLOATING = json.loads(os.environ.get("LBLAB_FLOATING") or "{}")
SETTINGS = json.loads(os.environ.get("LBLAB_SETTINGS") or "{}")
ZONE = os.environ.get("LBLAB_ZONE", "")
TTL_S = float((SETTINGS.get("dns") or {}).get("ttl_s", 3.0))
WORK_MS = env_int("LBLAB_WORK_MS", 10)
THINK_S = env_float("LBLAB_THINK_S", 0.05)
_CLIENT_IDS = itertools.count(1)
_LOG = (open(os.environ["LBLAB_CLIENT_LOG"], "a", buffering=1)
        if os.environ.get("LBLAB_CLIENT_LOG") else None)


def log(**line) -> None:
    if _LOG is not None:
        _LOG.write(json.dumps(line) + "\n")


def read_zone() -> list[list[str]]:
    """The zone's answer: [[balancer, url], ...]."""
    with open(ZONE, encoding="utf-8") as fh:
        return [[name, url] for name, url in json.load(fh)["answer"].items()]


def call(user, url: str, via: str, node: str) -> None:
    began = time.time()
    with user.client.get(f"{url}/work?ms={WORK_MS}", name=f"GET /work via {via}",
                         catch_response=True, timeout=1.0) as resp:
        ok = 0 < (resp.status_code or 0) < 500
        if ok:
            resp.success()
        else:
            resp.failure(f"{node}: {resp.status_code or 'no answer'}")
        error = "" if ok else str(getattr(resp, "error", "") or resp.status_code)[:120]
    log(ts=began, via=via, node=node, ok=ok, status=resp.status_code or 0, error=error,
        ms=round((time.time() - began) * 1000, 1))


class OfficeClient(HttpUser):
    fixed_count = env_int("LBLAB_VIP_USERS", 8)
    wait_time = between(THINK_S * 0.5, THINK_S * 1.5)

    def on_start(self):
        bind_source(self)

    @task
    def work(self):
        call(self, FLOATING["vip"], "vip", "vip")


class AppClient(HttpUser):
    wait_time = between(THINK_S * 0.5, THINK_S * 1.5)

    def on_start(self):
        bind_source(self)
        self.cache = ResolverCache(TTL_S)
        self.cid = next(_CLIENT_IDS)

    def resolve(self) -> list[list[str]]:
        before = self.cache.queries
        answer = self.cache.lookup(time.monotonic(), read_zone)
        if self.cache.queries != before:
            log(ts=time.time(), via="dns-query", client=self.cid, answer=[n for n, _ in answer], ok=True)
        return answer

    @task
    def work(self):
        node, url = random.choice(self.resolve())
        call(self, url, "dns", node)
