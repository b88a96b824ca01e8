"""compose.yml brought up for real on a Docker engine, driven like a learner would.

One test, in order (the steps build on each other and share one engine): every service
healthy and its health endpoint answering; the dashboard over the front door in public
mode; a WebSocket that sees a live routing decision for a request we send; a learner's
sandbox, started through the site, running as a container of its own (the site is wired
to the container driver) with the learner's dashboard streaming it; a real browser
page whose socket's daphne worker is killed, and which reconnects through the other one;
then everything torn down, with no container, network, volume or engine process left.

All traffic goes to 127.0.0.1 (compose.hostnet.yml puts every service on the host's
network on ports 30700-30799), never to a container's address.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websocket

from docker.engine import compose, site_env
from tests.deploy.learner import dashboard_streams, set_up_live_sandbox

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "compose.yml", REPO / "compose.hostnet.yml"]
PROJECT = "lblab-test"
FRONT = "http://127.0.0.1:30700"
LAB = "http://127.0.0.1:30780"
ADMIN = "http://127.0.0.1:30790"
HEALTH = {  # service -> what its health endpoint is
    "proxy": f"{ADMIN}/healthz", "web": "http://127.0.0.1:30701/healthz",
    "ws1": "http://127.0.0.1:30702/healthz", "ws2": "http://127.0.0.1:30703/healthz",
    **{f"b{i}": f"http://127.0.0.1:3078{i}/health/live" for i in range(1, 5)},
}


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_until(what: str, check, timeout: float = 90.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")


def health_states(engine) -> dict[str, str]:
    out = {}
    for cid in engine.ids("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}"):
        raw = engine.docker("inspect", cid).stdout
        info = json.loads(raw)[0]
        service = info["Config"]["Labels"]["com.docker.compose.service"]
        state = info["State"]
        out[service] = (state.get("Health") or {}).get("Status") or state["Status"]
    return out


def open_socket() -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:30700/ws/lab/default/",
                                       origin=FRONT, timeout=10)


def backend_of(client_port: int) -> str | None:
    """Which daphne worker (ws1/ws2) the front door tunnelled this client's socket to."""
    _, body = get(f"{ADMIN}/connections")
    for conn in json.loads(body)["connections"]:
        if conn.get("kind") == "websocket" and conn["client"].endswith(f":{client_port}"):
            return conn["backend"]
    return None


@pytest.mark.timeout(900)
def test_compose_up_serves_streams_fails_over_and_leaves_nothing(engine, tmp_path):
    # Public mode's own secret (made once, no debug); the engine's socket for the site.
    env = {"SECRET_KEY": "", "DEBUG": "", **site_env(engine, tmp_path / "state")}
    try:
        compose(engine, PROJECT, FILES, "up", "-d", env=env, timeout=300)

        # Every long-running service reports healthy; migrations ran and exited 0.
        services = set(HEALTH) | {"postgres", "redis"}
        wait_until("every service healthy",
                   lambda: (s := health_states(engine)) and all(
                       s.get(name) == "healthy" for name in services) and s, timeout=300)
        assert health_states(engine)["migrate"] == "exited"
        migrate = engine.ids("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                             "--filter", "label=com.docker.compose.service=migrate")
        assert engine.docker("inspect", "-f", "{{.State.ExitCode}}", migrate[0]).stdout.strip() \
            == "0"
        for service, url in HEALTH.items():
            status, body = get(url)
            assert status == 200, f"{service}: {url} answered {status}: {body[:300]}"
        # The site processes' /healthz checked PostgreSQL and Redis: a stopped Redis shows.
        engine.docker("pause", *engine.ids("ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                                           "--filter", "label=com.docker.compose.service=redis"))
        try:
            status, body = get("http://127.0.0.1:30701/healthz", timeout=30)
            assert status == 503 and body.startswith("redis:"), body
        finally:
            engine.docker("unpause", *engine.ids(
                "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                "--filter", "label=com.docker.compose.service=redis"))
        assert get("http://127.0.0.1:30701/healthz") == (200, "ok\n")

        # Public mode: one secret, made once in the state volume, shared by every worker.
        secrets_seen = set()
        for service in ("web", "ws1", "ws2"):
            cid = engine.ids("ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                             "--filter", f"label=com.docker.compose.service={service}")[0]
            secrets_seen.add(engine.docker("exec", cid, "cat", "/var/lib/lblab/secret_key")
                             .stdout.strip())
        assert len(secrets_seen) == 1 and len(secrets_seen.pop()) >= 50

        # The dashboard over the front door, in public mode (no debug pages).
        status, page = get(f"{FRONT}/")
        assert status == 200 and 'id="feed-status"' in page
        status, page = get(f"{FRONT}/no-such-page-{secrets.token_hex(4)}")
        assert status == 404 and "Traceback" not in page and "DEBUG = True" not in page

        # A WebSocket sees the routing decision of a request we send to the lab listener.
        sock = open_socket()
        try:
            assert json.loads(sock.recv())["kind"] == "first_paint"
            marker = f"/deploy-{secrets.token_hex(6)}"

            def decision_seen():
                assert get(f"{LAB}{marker}")[0] == 200
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    msg = json.loads(sock.recv())
                    if msg.get("kind") == "tick" and marker in json.dumps(msg.get("decisions")):
                        return msg
                return None

            tick = wait_until("a tick with our request's decision", decision_seen, timeout=30)
            assert tick["sandbox"] == "default"
        finally:
            sock.close()

        # A learner's own sandbox, set up through the site: a container of its own with no
        # network on the engine; their dashboard streams what goes through their proxy.
        answer, cookie = set_up_live_sandbox()
        sandbox = answer["sandbox"]
        ids = engine.ids("ps", "--filter", f"label=org.lblab.sandbox={sandbox}")
        assert len(ids) == 1, f"no container runs sandbox {sandbox}: {engine.ids('ps', '-a')}"
        info = json.loads(engine.docker("inspect", ids[0]).stdout)[0]
        assert info["HostConfig"]["NetworkMode"] == "none" and info["State"]["Running"]
        assert dashboard_streams(sandbox, answer["proxy_url"], cookie)["sandbox"] == sandbox

        # A browser page: kill the daphne worker its socket is on; the page reconnects.
        probe = subprocess.Popen([sys.executable, str(Path(__file__).with_name("page_probe.py")),
                                  f"{FRONT}/"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, cwd=REPO)
        try:
            first = probe.stdout.readline().strip()
            assert first.startswith("live "), first
            opened_before = int(first.split()[1])
            _, body = get(f"{ADMIN}/connections")
            workers = {c["backend"] for c in json.loads(body)["connections"]
                       if c.get("kind") == "websocket"}
            assert len(workers) == 1, f"the page's socket: {body}"
            victim = workers.pop()
            victim_ids = engine.ids("ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                                    "--filter", f"label=com.docker.compose.service={victim}")
            assert len(victim_ids) == 1, victim_ids
            # A crash, not a stop: SIGKILL to the worker's process from outside (the engine
            # does not restart a container stopped through its API, as `docker kill` is).
            pid = int(engine.docker("inspect", "-f", "{{.State.Pid}}", victim_ids[0]).stdout)
            os.kill(pid, signal.SIGKILL)
            probe.stdin.write("killed\n")
            probe.stdin.flush()
            assert probe.stdout.readline().strip() == "lost"
            again = probe.stdout.readline().strip()
            assert again.startswith("live ") and int(again.split()[1]) > opened_before, again
        finally:
            if probe.poll() is None:
                probe.stdin.close()
                probe.wait(30)
        assert probe.returncode == 0
        # The killed worker comes back by itself (restart: unless-stopped).
        wait_until(f"{victim} restarted and healthy",
                   lambda: health_states(engine).get(victim) == "healthy", timeout=300)
    finally:
        # Learners' sandboxes are the site's, not compose's: `down` leaves them (docs/deploy.md).
        for cid in engine.ids("ps", "-a", "--filter", "label=org.lblab.sandbox"):
            engine.docker("rm", "-f", "-v", cid, check=False)
        compose(engine, PROJECT, FILES, "down", "-v", "--remove-orphans", env=env,
                check=False, timeout=180)

    left = engine.inventory()
    assert left == {"containers": [], "services": [], "networks": [], "volumes": []}, left
    # With the slash: another engine's root may start with this one's name (/run/lblab-docker-x).
    run_root = f"{engine.run_root}/"
    engine.stop()
    stray = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if run_root in cmdline:
                stray.append(f"{proc.name}: {cmdline[:120]}")
    assert not stray, f"processes of the test engine still running: {stray}"
    assert engine.mounts() == [], "the stopped engine left mounts behind"
