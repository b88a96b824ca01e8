"""SIGHUP reloads the config file like PUT /config; SIGTERM drains. A real
`python -m proxy --config FILE` process, real toy backends, real HTTP clients."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import pytest
import yaml

from tests.proxy.e2e.support import REPO, backend_entry, base_config, request

LISTENING = re.compile(r"lblab proxy listening: (.*)")
WAIT = 20.0


class Proc:
    """`python -m proxy --config FILE [args]`, its output kept, ports read from it."""

    def __init__(self, path: Path, *args: str):
        self.path = path
        self.lines: deque[str] = deque(maxlen=2000)
        self.ports: dict[str, int] = {}
        self.admin_port = 0
        self.ready = threading.Event()
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--config", str(path), *args], cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + WAIT
        while not self.ready.wait(0.05):
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()

    def _read(self) -> None:
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            m = LISTENING.search(line)
            if m and not self.ready.is_set():
                for part in m.group(1).split(";"):
                    words = part.split()
                    port = int(words[-1].rpartition(":")[2]) if words[0] == "admin" else \
                        int(words[2].rpartition(":")[2])
                    if words[0] == "admin":
                        self.admin_port = port
                    else:
                        self.ports[words[0]] = port
                self.ready.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))

    def wait_for(self, predicate, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not predicate():
            assert self.process.poll() is None, f"proxy died waiting for {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"never happened: {what}\n{self.output()}"
            time.sleep(0.02)

    def admin(self, path: str) -> dict:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def hup(self) -> None:
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def launch():
    started: list[Proc] = []

    def start(path: Path, *args: str) -> Proc:
        proc = Proc(path, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def write(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def one_pool(handle, **pool) -> dict:
    return base_config({"web": {"backends": [backend_entry(handle)], **pool}})


# ---------------------------------------------------------------- SIGHUP

def test_sighup_applies_the_changed_file(backends, launch, tmp_path):
    path = tmp_path / "proxy.yaml"
    write(path, one_pool(backends["b1"]))
    proxy = launch(path)
    assert request(proxy.ports["web"]).backend == "b1"
    write(path, one_pool(backends["b2"]))
    proxy.hup()
    proxy.wait_for(lambda: proxy.count("reloaded") == 1, "the reload")
    assert request(proxy.ports["web"]).backend == "b2"
    state = proxy.admin("/state")
    assert state["generation"] == 2
    assert [b["name"] for b in state["pools"]["web"]["backends"]] == ["b2"]
    assert proxy.process.poll() is None


def bad_files(base_text: str, seed: int) -> list[tuple[str, bytes, str]]:
    """(family, bytes, text the refusal must contain): fixed families plus seeded
    random corruptions of a valid file."""
    rng = random.Random(seed)
    good = base_text.encode()
    out = [
        ("yaml", b"listeners: [unclosed", "not valid YAML"),
        ("utf16", base_text.encode("utf-16"), "UTF-16"),
        ("latin1", base_text.replace("backends", "backénds").encode("latin-1"), "not UTF-8"),
        ("deep", b"a: " + b"[" * 5000 + b"]" * 5000, "nested more than"),
        ("bigint", base_text.replace("pools:", "pools:\n  x:\n    retries: " + "9" * 5000, 1)
         .encode(), "digits"),
        ("bomb", ("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n"
            for i in range(6)) + base_text).encode(), "alias"),
        ("errors", base_text.replace("forward: web", "forward: nowhere").replace(
            "listeners:", "access_log: \"a\\x00b\"\nlisteners:").encode(), "nowhere"),
        ("wire", base_text.replace("forward: web", "redirect: {location: \"/x\\r\\nSet-Cookie: a=b\"}")
         .encode(), "control character"),
        ("huge", good + b"\n#" + b"x" * (600 * 1024), "limit"),
    ]
    for i in range(6):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            data[at:at + 1] = bytes([rng.choice(b"\xff\x00{}[]:&*!\t\r")])
        out.append((f"corrupt{i}", bytes(data), ""))
    return out


def test_sighup_refuses_a_bad_file_whole_and_keeps_running(backends, launch, tmp_path):
    path = tmp_path / "proxy.yaml"
    config = one_pool(backends["b1"])
    write(path, config)
    good_text = path.read_text()
    proxy = launch(path)
    before = proxy.admin("/config?format=json")
    for family, raw, expect in bad_files(good_text, seed=11):
        path.write_bytes(raw)
        refused, reloaded = proxy.count("refused"), proxy.count("reloaded")
        proxy.hup()
        proxy.wait_for(lambda: proxy.count("refused") > refused
                       or proxy.count("reloaded") > reloaded, f"the reload of {family}")
        if proxy.count("reloaded") > reloaded:
            # A random corruption may still be a valid config (a changed comment).
            assert family.startswith("corrupt"), proxy.output()
            path.write_text(good_text)
            proxy.hup()
            proxy.wait_for(lambda: proxy.count("reloaded") > reloaded + 1, "restore")
            continue
        tail = "\n".join(list(proxy.lines)[-20:])
        assert expect in tail, (family, tail)
        assert "Traceback" not in proxy.output()
        assert proxy.admin("/config?format=json") == before, family
        assert request(proxy.ports["web"]).backend == "b1", family
    # Every refusal left it running; a good file is applied again.
    write(path, one_pool(backends["b2"]))
    reloaded = proxy.count("reloaded")
    proxy.hup()
    proxy.wait_for(lambda: proxy.count("reloaded") > reloaded, "the final reload")
    assert request(proxy.ports["web"]).backend == "b2"


def test_sighup_refuses_a_file_that_cannot_be_read(backends, launch, tmp_path):
    path = tmp_path / "proxy.yaml"
    write(path, one_pool(backends["b1"]))
    proxy = launch(path)
    path.unlink()
    proxy.hup()
    proxy.wait_for(lambda: proxy.count("refused") == 1, "the refusal")
    assert "cannot read" in proxy.output()
    assert request(proxy.ports["web"]).backend == "b1"


# ---------------------------------------------------------------- SIGTERM

def test_sigterm_lets_a_request_in_flight_finish(backends, launch, tmp_path):
    slow = backends["b3"]
    slow.control({"latency_ms": 700})
    path = tmp_path / "proxy.yaml"
    config = one_pool(slow)
    config["shutdown_grace"] = "10s"
    write(path, config)
    proxy = launch(path)  # no --grace: the config's shutdown_grace applies
    result: dict = {}
    client = threading.Thread(target=lambda: result.update(r=request(proxy.ports["web"])))
    client.start()
    proxy.wait_for(lambda: proxy.admin("/state")["pools"]["web"]["backends"][0]["outstanding"]
                   == 1, "the request in flight")
    proxy.process.send_signal(signal.SIGTERM)
    client.join(15)
    assert result["r"].status == 200 and result["r"].backend == "b3"
    assert proxy.process.wait(15) == 0
    assert "requests in flight get up to 10s" in proxy.output()
    assert "lblab proxy stopped" in proxy.output()


def test_sigterm_closes_what_outlives_the_grace(backends, launch, tmp_path):
    slow = backends["b3"]
    slow.control({"latency_ms": 8000})
    path = tmp_path / "proxy.yaml"
    config = one_pool(slow)
    config["shutdown_grace"] = "200ms"
    write(path, config)
    proxy = launch(path)
    outcome: dict = {}

    def call():
        try:
            outcome["r"] = request(proxy.ports["web"])
        except OSError as exc:  # the proxy closed the connection: the expected end
            outcome["error"] = exc

    client = threading.Thread(target=call)
    client.start()
    proxy.wait_for(lambda: proxy.admin("/state")["pools"]["web"]["backends"][0]["outstanding"]
                   == 1, "the request in flight")
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(15) == 0  # it did not wait for the 8 s answer
    client.join(15)
    assert "error" in outcome or outcome["r"].status >= 500


def test_sighup_during_startup_or_drain_never_kills(backends, launch, tmp_path):
    path = tmp_path / "proxy.yaml"
    config = one_pool(backends["b1"])
    write(path, config)
    proxy = launch(path)
    proxy.process.send_signal(signal.SIGTERM)
    proxy.process.send_signal(signal.SIGHUP)
    assert proxy.process.wait(15) == 0
