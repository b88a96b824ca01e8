"""The deployment's pure parts, without an engine: which packages go into the runtime image,
what a sandbox container is asked for, how the entry point reads what to wait for."""
from __future__ import annotations

import http.server
import threading

import pytest

from docker import entrypoint, healthcheck, images
from labs.sandbox import containers, topology


def test_runtime_requirements_are_the_closure_of_requirements_in_with_extras():
    always = lambda extra: True  # noqa: E731
    only = lambda name: (lambda extra: extra == name)  # noqa: E731
    requires = {
        "app": [("lib", set(), always), ("extra-dep", set(), only("fast"))],
        "lib": [("sub", {"client"}, always)],
        "sub": [("ws", set(), only("client")), ("never", set(), only("server"))],
        "tester": [("app", set(), always)],
    }
    assert images.closure([("app", set())], requires) == {"app", "lib", "sub", "ws"}
    assert images.closure([("app", {"fast"})], requires) == {"app", "lib", "sub", "ws",
                                                             "extra-dep"}


def test_runtime_lock_keeps_the_pins_and_says_what_is_missing():
    lock = "# header\nDjango==5.2\npytest==9.0\nchannels_redis==4.3\n"
    assert images.runtime_lock(lock, {"django", "channels-redis"}) == \
        "Django==5.2\nchannels_redis==4.3\n"
    with pytest.raises(images.BuildError, match="no pin for uvloop"):
        images.runtime_lock(lock, {"django", "uvloop"})


def test_the_runtime_list_of_this_repository_has_no_test_packages():
    names = set(images.requirement_names(images.runtime_requirements()))
    assert {"django", "daphne", "gunicorn", "channels-redis", "psycopg-binary", "uvloop",
            "async-timeout"} <= names
    assert not names & {"pytest-django", "pytest-xdist", "pytest-playwright", "playwright",
                        "hypothesis", "check-jsonschema", "grpcio", "pytest-asyncio"}


def test_a_sandbox_container_has_no_network_and_hard_limits(tmp_path):
    limits = containers.Limits(memory_mb=128, cpus=0.25, pids=50, nofile=512)
    body = containers.container_body("learner-1", tmp_path, "lblab:test", limits)
    host = body["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["Memory"] == host["MemorySwap"] == 128 * 1024 * 1024
    assert host["NanoCpus"] == 250_000_000 and host["PidsLimit"] == 50
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 512, "Hard": 512}]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert host["Binds"] == [f"{tmp_path}:/sandbox:rw"]
    assert body["User"] == "10001" and body["Labels"] == {containers.LABEL: "learner-1"}


def test_every_sandbox_uses_the_same_inner_ports_and_relays_each_part():
    names = ["b1", "b2"]
    template = topology.default_config(names)
    ports = containers.inner_ports(names, template)
    assert ports == {"proxy": 8080, "admin": 9900, "b1": 9001, "b2": 9002}
    spec = containers.run_spec(names, ports)
    assert spec["backends"] == {"b1": 9001, "b2": 9002}
    assert set(spec["relays"]) == {"proxy", "admin", "b1", "b2"}
    placed = topology.place(template, "127.0.0.1", ports)
    assert topology.validate(placed) == []
    assert placed["admin"]["listen"] == "127.0.0.1:9900"


def test_the_engine_must_be_a_unix_socket():
    assert containers.engine_socket("unix:///run/x/docker.sock") == "/run/x/docker.sock"
    with pytest.raises(containers.EngineError, match="Unix socket"):
        containers.engine_socket("tcp://10.0.0.1:2375")


def test_entrypoint_reads_what_to_wait_for():
    assert entrypoint.parse_targets("postgres:5432, redis:6379,") == [("postgres", 5432),
                                                                     ("redis", 6379)]
    with pytest.raises(ValueError, match="HOST:PORT"):
        entrypoint.parse_targets("postgres")


def test_healthcheck_against_a_real_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert healthcheck.main([f"{base}/ok", f"tcp://127.0.0.1:{server.server_port}"]) == 0
        assert healthcheck.main([f"{base}/bad"]) == 1
        assert "status 503" in healthcheck.check(f"{base}/bad")
    finally:
        server.shutdown()


def test_the_stack_file_replaces_commands_and_drops_network_mode():
    from pathlib import Path

    from docker import stackfile

    repo = Path(__file__).resolve().parents[2]
    merged = stackfile.stack([repo / "compose.yml", repo / "compose.hostnet.yml",
                              repo / "compose.swarm.yml"])
    proxy = merged["services"]["proxy"]
    assert proxy["command"] == ["python", "-m", "proxy", "--config", "docker/front-hostnet.yaml"]
    assert proxy["healthcheck"]["test"][-1] == "tcp://127.0.0.1:30700"
    assert proxy["networks"] == ["hostnet"] and "network_mode" not in proxy
    assert not any(key.startswith("x-") for key in merged)
    assert merged["services"]["web"]["environment"]["REDIS_URL"] == "redis://127.0.0.1:30711/0"
    assert "*id" not in stackfile.dump(merged) and "&id" not in stackfile.dump(merged)


def test_the_container_driver_fits_the_services_seam(tmp_path):
    from labs.sandbox.drivers import Driver, make_driver

    driver = make_driver("containers", state_dir=tmp_path, max_sandboxes=3,
                         port_range=(30720, 30779))
    assert isinstance(driver, containers.ContainerDriver) and isinstance(driver, Driver)
    assert driver.list() == []
