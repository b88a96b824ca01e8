"""App clients with their own retries (the mobile SDK), in front of the proxy's retries.

    LBLAB_SETTINGS='{"clients": {"retries": 3, "backoff_ms": 0, "honor_retry_after": false}}' \
    locust -f labs/catalog/retry-storm/traffic.py --headless -u 24 -t 8s --host URL

Each user request (one stock lookup: GET /work?ms=LBLAB_WORK_MS, default 20) gets an id,
and every attempt of it carries the id and its attempt number in the query string
(``&req=u7-12&try=2``), so the proxy's events say how many attempts each user request
cost. An attempt that fails (a 5xx, a 429 or no answer) is tried again, up to
``lab.clients.retries`` more times (0..10):

- at once, by default (what many SDKs do);
- after ``backoff_ms`` x 2^n with full jitter (uniform in [0, that]) when backoff_ms > 0;
- after the answer's ``Retry-After`` (seconds, capped at 5) when honor_retry_after is true
  and the answer has one; otherwise as above.

Locust counts each attempt ("GET /work try N") and each user request once more under
"user request (after retries)", failed when its last attempt failed. LBLAB_THINK_S
(default 0.05 s) is the pause between a user's requests.
"""
import itertools
import json
import os
import random
import time

from locust import HttpUser, between, events, task

from lblab_common import bind_source, env_float, env_int

WORK_MS = env_int("LBLAB_WORK_MS", 20)
THINK_S = env_float("LBLAB_THINK_S", 0.05)
_SETTINGS = json.loads(os.environ.get("LBLAB_SETTINGS") or "{}").get("clients") or {}
RETRIES = max(0, min(10, int(_SETTINGS.get("retries", 3))))
BACKOFF_MS = max(0.0, min(10_000.0, float(_SETTINGS.get("backoff_ms", 0))))
HONOR_RETRY_AFTER = bool(_SETTINGS.get("honor_retry_after", False))
MAX_RETRY_AFTER_S = 5.0
_users = itertools.count(1)


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (attempt 1 is the first try)."""
    if HONOR_RETRY_AFTER and retry_after and retry_after.strip().isdigit():
        return min(MAX_RETRY_AFTER_S, float(retry_after.strip()))
    if BACKOFF_MS:
        return random.uniform(0, BACKOFF_MS * 2 ** (attempt - 1)) / 1000.0
    return 0.0


class AppClient(HttpUser):
    wait_time = between(THINK_S * 0.5, THINK_S * 1.5)

    def on_start(self):
        self.uid = next(_users)
        self.seq = itertools.count(1)
        bind_source(self)

    @task
    def lookup(self):
        req = f"u{self.uid}-{next(self.seq)}"
        started = time.perf_counter()
        ok, last = False, None
        for attempt in range(1, RETRIES + 2):
            with self.client.get(f"/work?ms={WORK_MS}&req={req}&try={attempt}",
                                 name=f"GET /work try {min(attempt, 4)}{'+' if attempt > 4 else ''}",
                                 timeout=10, catch_response=True) as r:
                last = r.status_code
                if 0 < r.status_code < 400:
                    r.success()
                    ok = True
                    break
                r.failure(f"status {r.status_code}")
                wait = retry_delay(attempt, r.headers.get("Retry-After"))
            if attempt <= RETRIES and wait:
                time.sleep(wait)
        events.request.fire(
            request_type="USER", name="user request (after retries)",
            response_time=(time.perf_counter() - started) * 1000, response_length=0,
            exception=None if ok else Exception(f"failed after {attempt} attempts "
                                                f"(last status {last})"),
            context={})
