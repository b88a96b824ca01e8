"""Bursty traffic: a low base load with sharp bursts up to the full user count.

    locust -f labs/locust/bursty.py --headless -u 50 -r 50 -t 60s --host http://127.0.0.1:8080

The shape reads the usual options: -u is the peak, the base is a fifth of it (at least 1),
-t is when it ends. A cycle lasts LBLAB_BURST_PERIOD_S (default 10 s, shorter for short
runs) and ends with a burst of LBLAB_BURST_LENGTH_S (default 3 s, a third of the period at
most); users are started and stopped at once (spawn rate = peak) so the edge is sharp.
"""
from locust import HttpUser, LoadTestShape, between, task

from lblab_common import bind_source, env_float


class Visitor(HttpUser):
    wait_time = between(0.1, 0.3)

    def on_start(self):
        bind_source(self)

    @task(4)
    def page(self):
        self.client.get("/", name="GET /")

    @task(1)
    def work(self):
        self.client.get("/work?ms=50", name="GET /work")


class Bursts(LoadTestShape):
    use_common_options = True  # -u, -r and -t mean peak, (ignored) and end

    def tick(self):
        options = self.runner.environment.parsed_options
        peak = max(1, int(getattr(options, "num_users", None) or 10))
        run_time = getattr(options, "run_time", None) or 60
        now = self.get_run_time()
        if now >= run_time:
            return None
        base = max(1, peak // 5)
        period = min(env_float("LBLAB_BURST_PERIOD_S", 10.0), max(2.0, run_time / 2))
        burst = min(env_float("LBLAB_BURST_LENGTH_S", 3.0), period / 3)
        in_burst = now % period >= period - burst
        return (peak if in_burst else base), peak
