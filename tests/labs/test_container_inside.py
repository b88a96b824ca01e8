"""What runs inside a sandbox container (labs/sandbox/container_inside.py): the commands it
is given ready-made, and its readiness answer, on real loopback sockets (no engine needed)."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from labs.sandbox import containers
from labs.sandbox.container_inside import Serve

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_spec_carries_every_command_so_the_inside_imports_nothing_of_labs():
    spec = containers.run_spec(["b1", "b2"], {"proxy": 8080, "admin": 9900, "b1": 9001,
                                              "b2": 9002})
    commands = spec["commands"]
    assert commands["proxy"] == ["python", "-m", "proxy", "--config", "/sandbox/proxy.yaml"]
    assert commands["backends"][:4] == ["python", "-m", "labs.backend", "--preload"]
    assert "/sandbox/b2.log" in commands["backends"]
    assert commands["backend"]["b1"][:3] == ["python", "-m", "labs.backend"]
    assert "9001" in commands["backend"]["b1"]
    body = containers.container_body("x", Path("/tmp/x"), "lblab:latest", containers.Limits())
    assert body["Cmd"][:3] == ["python", "-I", containers.INSIDE]
    # Run as the container runs it: -I, as a script: not one labs module is imported.
    probe = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='inside'); "
             "print(sorted(m for m in sys.modules if m.startswith('labs')))")
    out = subprocess.run([sys.executable, "-I", "-c", probe,
                          str(REPO / "labs/sandbox/container_inside.py")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_ready_says_which_parts_do_not_accept_yet_then_that_all_do():
    listening, later = free_port(), free_port()
    spec = {"backends": {}, "config": "", "relays": {"admin": listening, "proxy": later},
            "commands": {}}
    serve = Serve(spec, Path("/nonexistent"))
    with socket.socket() as first:
        first.bind(("127.0.0.1", listening))
        first.listen()
        answer = asyncio.run(serve.ready(0.2))
        assert answer == {"ready": False, "waiting": ["proxy"], "exited": {}}
        with socket.socket() as second:
            second.bind(("127.0.0.1", later))
            second.listen()
            assert asyncio.run(serve.ready(5.0)) == {"ready": True}


def test_ready_gives_up_at_once_when_a_part_exited():
    spec = {"backends": {}, "config": "", "relays": {"proxy": free_port()}, "commands": {}}
    serve = Serve(spec, Path("/nonexistent"))
    serve.children["proxy"] = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    serve.children["proxy"].wait(30)
    answer = asyncio.run(serve.ready(30.0))
    assert answer == {"ready": False, "waiting": ["proxy"], "exited": {"proxy": 3}}
