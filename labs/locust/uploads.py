"""Long streaming uploads (chunked POST /upload) beside light page views.

    locust -f labs/locust/uploads.py --headless -u 10 -r 10 -t 60s --host http://127.0.0.1:8080

Uploader (half the users): each upload sends LBLAB_UPLOAD_BYTES (default 1 MiB) in chunks of
LBLAB_UPLOAD_CHUNK_BYTES (64 KiB), pausing LBLAB_UPLOAD_CHUNK_DELAY_S (0.05 s) between
chunks, as Transfer-Encoding: chunked: one upload holds a backend connection for about a
second. Visitor (the other half): quick GET /. Round robin keeps sending visitors to
backends busy with uploads; least_connections sees the open uploads and avoids them.
"""
import time

from locust import HttpUser, between, task

from lblab_common import bind_source, env_float, env_int


def chunks():
    total = env_int("LBLAB_UPLOAD_BYTES", 1 << 20)
    size = env_int("LBLAB_UPLOAD_CHUNK_BYTES", 64 << 10)
    delay = env_float("LBLAB_UPLOAD_CHUNK_DELAY_S", 0.05)
    block = b"x" * size
    sent = 0
    while sent < total:
        piece = block[: min(size, total - sent)]
        sent += len(piece)
        yield piece
        if sent < total:
            time.sleep(delay)  # gevent-patched: yields to other users


class Uploader(HttpUser):
    wait_time = between(0.2, 1.0)

    def on_start(self):
        bind_source(self)

    @task
    def upload(self):
        self.client.post("/upload", data=chunks(), name="POST /upload (stream)",
                         headers={"Content-Type": "application/octet-stream"})


class Visitor(HttpUser):
    wait_time = between(0.2, 0.5)

    def on_start(self):
        bind_source(self)

    @task
    def page(self):
        self.client.get("/", name="GET /")
