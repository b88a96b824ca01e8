"""Uploads from phones: chunked POST /upload that sometimes stall mid-body.

    locust -f labs/catalog/idle-timeout-upload/traffic.py --headless -u 8 -t 6s --host URL

Each upload sends 12 chunks of 32 KiB, 50 ms apart; every other upload stalls once, after
its fourth chunk, for LBLAB_STALL_S (default 0.8 s: a train in a tunnel), then goes on.
Nothing is sent during the stall: to the proxy the connection is idle.
"""
import itertools
import os
import time

from locust import HttpUser, between, task

from lblab_common import bind_source

STALL_S = float(os.environ.get("LBLAB_STALL_S", "0.8"))
_n = itertools.count()


def body(stall: bool):
    block = b"p" * (32 << 10)
    for i in range(12):
        yield block
        if stall and i == 3:
            time.sleep(STALL_S)  # gevent-patched: other users go on
        else:
            time.sleep(0.05)


class Phone(HttpUser):
    wait_time = between(0.1, 0.4)

    def on_start(self):
        bind_source(self)

    @task
    def upload(self):
        stall = next(_n) % 2 == 1
        self.client.post("/upload", data=body(stall),
                         name="POST /upload (stalls)" if stall else "POST /upload",
                         headers={"Content-Type": "application/octet-stream",
                                  "X-Stall": "1" if stall else "0"})
