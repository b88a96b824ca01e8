"""TrafficService: short real locust runs, as separate processes, against real sandboxes."""
from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from labs.sandbox import SandboxService, procs
from labs.traffic import PROFILES, TrafficError, TrafficService, parse_stats



def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline and procs.pid_alive(int(entry)):
                found.append(int(entry))
    return found


def wait_routable(url: str, timeout: float = 30.0) -> None:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs.http_status(host, int(port), "/")[0] == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


def backend_requests(sb) -> dict[str, int]:
    out = {}
    for name, url in sb.backends.items():
        host, port = url.removeprefix("http://").rsplit(":", 1)
        body = procs.http_get(host, int(port), "/_control")[2]
        out[name] = json.loads(body)["requests_by_kind"]["app"]
    return out


@pytest.fixture
def state(tmp_path):
    yield tmp_path / "state"
    leftovers = processes_mentioning(str(tmp_path))
    for pid in leftovers:
        procs.signal_group(pid, 9)
    assert not leftovers, "processes left behind"


@pytest.fixture
def sandboxes(state):
    svc = SandboxService(state, start_timeout=40.0)
    yield svc
    for sb in svc.list():
        svc.stop(sb.id, grace=3.0)


def test_bad_requests_are_refused(state):
    traffic = TrafficService(state)
    sb = {"id": "x", "proxy_url": "http://127.0.0.1:1"}
    with pytest.raises(TrafficError, match="unknown traffic profile 'flood'"):
        traffic.start(sb, "flood")
    with pytest.raises(TrafficError, match="users must be 1-5000") as err:
        traffic.start(sb, "steady", users=0, duration_s=0)
    # one Problem (labs/problems.py): a 400 naming each field at fault
    assert err.value.status == 400
    assert [e["path"] for e in err.value.errors] == ["users", "duration_s"]
    with pytest.raises(TrafficError, match="a sandbox with an id and a proxy_url"):
        traffic.start({"id": "x"}, "steady")
    with pytest.raises(TrafficError, match="no traffic run") as err:
        traffic.status("nope")
    assert err.value.as_json() == {"ok": False, "error": "no traffic run 'nope'",
                                   "errors": [{"path": "run_id",
                                               "message": "no traffic run 'nope'"}]}
    assert err.value.status == 404
    assert set(PROFILES) == {"steady", "bursty", "heavy_user", "nat", "uploads"}
    assert all(path.exists() for path in PROFILES.values())


@pytest.mark.timeout(240)
def test_short_steady_run_and_a_stopped_upload_run(sandboxes, state):
    sb = sandboxes.create("tr1", backends=2)
    wait_routable(sb.proxy_url)
    traffic = TrafficService(state)

    run = traffic.start(sb, "steady", users=3, spawn_rate=3, duration_s=3)
    assert run["sandbox_id"] == "tr1" and run["host"] == sb.proxy_url
    assert traffic.status(run["run_id"])["state"] in ("running", "done")
    final = traffic.wait(run["run_id"], timeout=90)
    assert final["state"] == "done", final
    assert final["progress"] == 1.0
    stats = final["stats"]
    assert stats["requests"] > 0 and stats["failures"] == 0, stats
    assert stats["rps"] > 0 and stats["p50"] is not None and stats["p99"] >= stats["p50"]
    assert {e["name"] for e in stats["endpoints"]} <= {"GET /", "GET /work", "GET /work (slow)"}
    served = backend_requests(sb)
    assert sum(served.values()) >= stats["requests"] and all(served.values()), served

    long = traffic.start(sb, "uploads", users=2, spawn_rate=2, duration_s=120)
    deadline = time.monotonic() + 60
    while traffic.status(long["run_id"])["stats"]["requests"] == 0:
        assert time.monotonic() < deadline, traffic.status(long["run_id"])
        time.sleep(0.3)
    stopped = traffic.stop(long["run_id"])
    assert stopped["state"] == "stopped" and 0 < stopped["progress"] < 1
    assert not processes_mentioning(long["dir"])
    assert [r["run_id"] for r in traffic.runs_for("tr1")] == [run["run_id"], long["run_id"]]
    assert traffic.runs_for("another") == []


@pytest.mark.timeout(240)
def test_heavy_user_is_pinned_by_cookie_stickiness(sandboxes, state):
    config = {
        "listeners": {"web": {"bind": "127.0.0.1:1", "routes": ["all"]}},
        "routes": {"all": {"forward": "web"}},
        "pools": {"web": {
            "sticky": {"mode": "cookie"},
            "health": {"type": "http", "path": "/health", "interval": "500ms",
                       "healthy_threshold": 1},
            "backends": [{"name": "b1", "address": "x:1"}, {"name": "b2", "address": "x:1"},
                         {"name": "b3", "address": "x:1"}],
        }},
    }
    sb = sandboxes.create("tr2", backends=3, config=config)
    wait_routable(sb.proxy_url)
    before = backend_requests(sb)
    traffic = TrafficService(state)
    run = traffic.start(sb, "heavy_user", users=6, spawn_rate=6, duration_s=4)
    final = traffic.wait(run["run_id"], timeout=90)
    assert final["state"] == "done", final
    # No session was ever lost: every request after login found its backend.
    assert final["stats"]["failures"] == 0, final["stats"]
    after = backend_requests(sb)
    served = Counter({name: after[name] - before[name] for name in after})
    busiest, count = served.most_common(1)[0]
    assert count > 0.6 * sum(served.values()), served  # the heavy user's backend


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.seen.append(self.client_address[0])
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.timeout(180)
def test_nat_profile_really_sends_from_one_address_for_the_office(state):
    """The proxy sees the socket's peer address: check it on a plain recording server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        traffic = TrafficService(state)
        target = {"id": "rec", "proxy_url": f"http://127.0.0.1:{server.server_address[1]}"}
        run = traffic.start(target, "nat", users=8, spawn_rate=8, duration_s=3)
        final = traffic.wait(run["run_id"], timeout=90)
        assert final["state"] == "done", final
    finally:
        server.shutdown()
        server.server_close()
    addresses = Counter(_Recorder.seen)
    assert addresses, "no request arrived"
    assert addresses["127.0.0.2"] > 0  # the office (6 of 8 users) behind one address
    others = set(addresses) - {"127.0.0.2"}
    assert len(others) >= 2 and all(a.startswith("127.0.0.") for a in others), addresses
    assert "127.0.0.1" not in addresses  # nobody sent from the default address


def test_parse_stats_reads_locust_csv(tmp_path):
    prefix = tmp_path / "run"
    assert parse_stats(str(prefix))["requests"] == 0
    (tmp_path / "run_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
        "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
        "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
        "GET,GET /,10,1,3,4.5,1,20,100,5.0,0.5,3,4,5,6,7,8,9,10,20,20,20\n"
        ",Aggregated,10,1,3,4.5,1,20,100,5.0,0.5,3,4,5,6,7,8,9,10,20,20,20\n")
    stats = parse_stats(str(prefix))
    assert (stats["requests"], stats["failures"], stats["rps"], stats["p50"], stats["p99"]) == \
        (10, 1, 5.0, 3.0, 10.0)
    assert stats["endpoints"][0]["name"] == "GET /"


@pytest.mark.timeout(180)
def test_one_run_per_sandbox_and_stop_stops_them_all(sandboxes, state):
    sb = sandboxes.create("tr-one", backends=2)
    wait_routable(sb.proxy_url)
    traffic = TrafficService(state)
    first = traffic.start(sb, "steady", users=2, spawn_rate=2, duration_s=120)
    # Progress counts from the first request, not from launching locust.
    assert traffic.status(first["run_id"])["progress"] == 0 or \
        traffic.status(first["run_id"])["stats"]["requests"] > 0
    with pytest.raises(TrafficError, match=rf"traffic run {first['run_id']} \(steady, 2 users\) "
                       r"is still sending to sandbox tr-one .*stop it first"):
        traffic.start(sb, "bursty", users=2, spawn_rate=2, duration_s=5)
    assert [r["run_id"] for r in traffic.running_for("tr-one")] == [first["run_id"]]

    # Another sandbox is not affected by this one's run.
    other = traffic.start({"id": "tr-other", "proxy_url": sb.proxy_url}, "steady", users=1,
                          spawn_rate=1, duration_s=120)

    second = traffic.start(sb, "steady", users=3, spawn_rate=3, duration_s=120, replace=True)
    assert traffic.status(first["run_id"])["state"] == "stopped"
    assert not processes_mentioning(first["dir"])
    deadline = time.monotonic() + 60
    while not traffic.status(second["run_id"])["sending"]:
        assert time.monotonic() < deadline, traffic.status(second["run_id"])
        time.sleep(0.3)
    st = traffic.status(second["run_id"])
    assert st["stats"]["requests"] > 0 and 0 < st["progress"] < 0.2, st

    stopped = traffic.stop_all("tr-one")
    assert [s["run_id"] for s in stopped] == [second["run_id"]]
    assert all(s["state"] == "stopped" for s in stopped)
    assert traffic.running_for("tr-one") == []
    assert traffic.status(other["run_id"])["state"] == "running"
    assert [s["run_id"] for s in traffic.stop_all("tr-other")] == [other["run_id"]]
    assert traffic.stop_all("tr-one") == []
