"""One heavy user among many light ones: stickiness pins the heavy one to one backend.

    locust -f labs/locust/heavy_user.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:8080

Every user logs in (POST /login: the backend sets the SESSIONID cookie; a cookie-sticky
proxy adds its own cookie) and keeps its cookies, as a browser does. Exactly one user is
heavy (fixed_count = 1): it requests its profile back to back, LBLAB_HEAVY_RPS per second
at most (default 50). The others are light: one request every 1-3 s. With cookie or
app-cookie stickiness, all of the heavy user's requests land on one backend, whose load and
latency stand out in the dashboard; with round robin they spread.
"""
from locust import HttpUser, between, constant_throughput, task

from lblab_common import bind_source, env_float


class SessionUser(HttpUser):
    abstract = True
    login_name = "light"

    def on_start(self):
        address = bind_source(self)
        user = f"{self.login_name}-{address or id(self)}"
        self.client.post(f"/login?user={user}", name="POST /login")

    @task
    def profile(self):
        with self.client.get("/profile", name="GET /profile", catch_response=True) as resp:
            if resp.status_code == 401:
                # Landed on a backend that never saw our session: the stickiness lesson.
                resp.failure("401: this backend does not know the session")
                self.client.post(f"/login?user={self.login_name}", name="POST /login")


class HeavyUser(SessionUser):
    fixed_count = 1
    login_name = "heavy"
    wait_time = constant_throughput(env_float("LBLAB_HEAVY_RPS", 50.0))


class LightUser(SessionUser):
    login_name = "light"
    wait_time = between(1, 3)
