"""The launcher (manage.py lab): real processes on free loopback ports, started in a child
process exactly as a learner would, then stopped with SIGINT: nothing may be left behind."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labs.backend.testing import free_port
from labs.sandbox import SandboxService, procs
from labs.sandbox.launcher import LabOptions, Launcher, LaunchError, read_status

REPO = Path(__file__).resolve().parents[2]



def lab_command() -> list[str]:
    """``manage.py lab`` when the labs app is installed in the site, else the same launcher
    through ``python -m labs.sandbox.launcher`` (identical options and code)."""
    probe = subprocess.run([sys.executable, "manage.py", "help", "lab"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        return [sys.executable, "manage.py", "lab"]
    return [sys.executable, "-m", "labs.sandbox.launcher"]


@pytest.fixture(scope="module")
def command() -> list[str]:
    return lab_command()


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and procs.pid_alive(int(entry)):
                found.append((int(entry), cmdline))
    return found


class Lab:
    """A launcher child process whose output is collected line by line."""

    def __init__(self, argv: list[str], tmp_path: Path, env: dict | None = None):
        env = {**{k: v for k, v in os.environ.items()
                  if k not in ("REDIS_URL", "DATABASE_URL", "LBLAB_ADMIN_URL", "LBLAB_PROXY_URL")},
               **(env or {})}
        env.update(LBLAB_STATE_DIR=str(tmp_path / "state"), LBLAB_VAR_DIR=str(tmp_path / "var"),
                   PYTHONUNBUFFERED="1")
        self.state_dir = tmp_path / "state"
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"launcher exited ({self.proc.returncode}):\n{self.output}")
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} in {timeout}s:\n{self.output}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def http(url: str, path: str = "/") -> tuple[int, dict, bytes]:
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    return procs.http_get(host, int(port), path, timeout=10)


def wait_status(url: str, ok, timeout: float = 30.0) -> tuple[int, dict, bytes]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = http(url)
            if ok(last[0]):
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url}: last answer {last!r}")


def ws_handshake(port: int, path: str) -> str:
    """Send a WebSocket upgrade; return the response head."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n")
                  .encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n")[0].decode("latin-1")


# ---------------------------------------------------------------- ports


def test_a_taken_port_is_refused_with_the_option_to_change(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        base = dict(port=free_port(), proxy_port=free_port(), admin_port=free_port(),
                    backend_ports=[free_port(), free_port()], state_dir=str(tmp_path))
        for field, part, option in [("proxy_port", "proxy", "--proxy-port"),
                                    ("port", "site", "--port"),
                                    ("admin_port", "admin", "--admin-port")]:
            launcher = Launcher(LabOptions(**{**base, field: taken}))
            with pytest.raises(LaunchError) as info:
                launcher.check_ports()
            m = re.fullmatch(rf"port {taken} \({part}\) is already in use: pass {option} (\d+)",
                             str(info.value))
            assert m, str(info.value)
            assert procs.port_free("127.0.0.1", int(m.group(1)))
        launcher = Launcher(LabOptions(**{**base, "backend_ports": [base["backend_ports"][0], taken]}))
        with pytest.raises(LaunchError, match=rf"port {taken} \(backend b2\) is already in use: "
                                              r"pass --backend-ports \d+-\d+"):
            launcher.check_ports()
    launcher = Launcher(LabOptions(**{**base, "admin_port": base["port"]}))
    with pytest.raises(LaunchError, match="is given to both site and admin"):
        launcher.check_ports()


@pytest.mark.timeout(120)
def test_the_command_refuses_a_taken_port_before_starting_anything(tmp_path, command):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        lab = Lab([*command, "--proxy-port", str(taken), "--port", str(free_port()),
                   "--admin-port", str(free_port()), "--backends", "2",
                   "--state-dir", str(tmp_path / "state")], tmp_path)
        lab.proc.wait(60)
        lab._reader.join(5)
    assert lab.proc.returncode != 0
    assert re.search(rf"port {taken} \(proxy\) is already in use: pass --proxy-port \d+",
                     lab.output), lab.output
    assert not processes_mentioning(str(tmp_path))


# ---------------------------------------------------------------- the whole lab


@pytest.mark.timeout(300)
def test_lab_starts_reports_a_dead_backend_and_stops_cleanly(tmp_path, command):
    ports = {"site": free_port(), "proxy": free_port(), "admin": free_port()}
    backend_ports = [free_port(), free_port()]
    lab = Lab([*command, "--port", str(ports["site"]), "--proxy-port", str(ports["proxy"]),
               "--admin-port", str(ports["admin"]),
               "--backend-ports", ",".join(map(str, backend_ports))], tmp_path)
    try:
        url = lab.wait_for(r"LBLab is running at (http://\S+)", timeout=200).group(1)
        assert url == f"http://127.0.0.1:{ports['site']}/"
        for port in [*ports.values(), *backend_ports]:
            lab.wait_for(rf"\s{port}\s", timeout=5)  # every port is in the table

        status, headers, _ = http(url)
        assert status == 200 and headers.get("server", "").startswith("daphne")
        status, headers, _ = wait_status(f"http://127.0.0.1:{ports['proxy']}", lambda s: s == 200)
        assert headers["x-backend"] in ("b1", "b2")

        service = SandboxService(lab.state_dir)
        sb = service.get("default")
        assert sb.pinned and sb.ports["b1"] == backend_ports[0]
        all_pids = {lab.proc.pid, *procs.descendants(lab.proc.pid)}
        assert set(sb.pids.values()) <= all_pids

        os.kill(sb.pids["b2"], signal.SIGKILL)
        lab.wait_for(rf"\[lab\] b2 \(port {backend_ports[1]}\) stopped", timeout=20)
        deadline = time.monotonic() + 10
        while (read_status(lab.state_dir) or {}).get("parts", {}).get("b2", {}).get("alive"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert read_status(lab.state_dir)["parts"]["site"]["alive"]
        assert not service.parts("default")["b2"]["alive"]

        # Someone (the site) restarts it: the launcher notices that too.
        service.restart_backend("default", "b2")
        lab.wait_for(rf"\[lab\] b2 \(port {backend_ports[1]}\) is running again", timeout=20)
        all_pids |= set(procs.descendants(lab.proc.pid)) | {service.get("default").pids["b2"]}

        lab.proc.send_signal(signal.SIGINT)
        assert lab.proc.wait(60) == 0, lab.output
        lab._reader.join(5)
        assert "stopped." in lab.output
        alive = [pid for pid in all_pids if procs.pid_alive(pid)]
        assert not alive, f"left behind: {alive}"
        assert not processes_mentioning(str(tmp_path))
        assert read_status(lab.state_dir) is None
        assert service.list() == []
        for port in [*ports.values(), *backend_ports]:
            assert procs.port_free("127.0.0.1", port)
    finally:
        lab.kill()


@pytest.mark.timeout(300)
def test_front_door_pages_from_gunicorn_and_websockets_to_daphne(tmp_path, command):
    front, web, ws = free_port(), free_port(), free_port()
    lab = Lab([*command, "--front-door", "--port", str(front), "--web-port", str(web),
               "--ws-port", str(ws), "--proxy-port", str(free_port()),
               "--admin-port", str(free_port()), "--backend-ports", str(free_port())], tmp_path)
    try:
        lab.wait_for(r"LBLab is running at http://127\.0\.0\.1:%d/" % front, timeout=200)
        status, headers, body = wait_status(f"http://127.0.0.1:{front}", lambda s: s == 200)
        assert headers.get("server", "").startswith("gunicorn"), headers
        assert headers.get("x-request-id")  # it went through the proxy
        head = ws_handshake(front, "/ws/lab/default/")
        assert head.startswith("HTTP/1.1 101"), head
        assert "server: daphne" in head.lower(), head
        lab.proc.send_signal(signal.SIGINT)
        assert lab.proc.wait(60) == 0, lab.output
        assert not processes_mentioning(str(tmp_path))
    finally:
        lab.kill()


@pytest.mark.timeout(300)
def test_with_redis_the_bridge_runs_as_its_own_process(tmp_path, command):
    redis_port = free_port()
    redis = subprocess.Popen(["/usr/bin/redis-server", "--port", str(redis_port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab = None
    try:
        lab = Lab([*command, "--port", str(free_port()), "--proxy-port", str(free_port()),
                   "--admin-port", str(free_port()), "--backend-ports", str(free_port())],
                  tmp_path, env={"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"})
        lab.wait_for(r"LBLab is running at", timeout=200)
        bridge = lab.wait_for(r"^\s+bridge\s+-\s+(\d+)\s+up", timeout=5)
        pid = int(bridge.group(1))
        assert procs.pid_alive(pid)
        assert read_status(lab.state_dir)["bridge"] == "process"
        lab.proc.send_signal(signal.SIGINT)
        assert lab.proc.wait(60) == 0, lab.output
        assert not procs.pid_alive(pid)
        assert not processes_mentioning(str(tmp_path))
    finally:
        if lab:
            lab.kill()
        redis.terminate()
        redis.wait(10)
