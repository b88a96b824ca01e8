"""compose.yml and its override files: valid against the compose spec, every service runs
exactly the command the launcher runs (labs/sandbox/commands.py), the front door
(docker/front.yaml) is wired to the services, and the test override (compose.hostnet.yml)
is the same deployment with loopback ports. tests/deploy/test_compose_up.py brings it up."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labs.sandbox import commands, topology
from labs.sandbox.launcher import LabOptions, Launcher

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yml"
PUBLISH = REPO / "compose.override.yml"
HOSTNET = REPO / "compose.hostnet.yml"
FRONT = REPO / "docker" / "front.yaml"
FRONT_HOSTNET = REPO / "docker" / "front-hostnet.yaml"
LAUNCHER_FRONT = REPO / "proxy" / "examples" / "compose-front.yaml"
SITE = ("web", "ws1", "ws2")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def hostnet() -> dict:
    return yaml.safe_load(HOSTNET.read_text())


def arg(cmd: list[str], flag: str) -> str:
    assert flag in cmd, f"{flag} missing from {cmd}"
    return cmd[cmd.index(flag) + 1]


def expected_command(cmd: list[str]) -> list[str]:
    """The builder's output for the values (hosts, ports, names) this command carries."""
    if cmd[:3] == ["python", "-m", "proxy"]:
        return commands.proxy_cmd(arg(cmd, "--config"))
    if cmd[:3] == ["python", "-m", "labs.backend"]:
        redis = arg(cmd, "--redis-url") if "--redis-url" in cmd else None
        return commands.backend_cmd(arg(cmd, "--name"), int(arg(cmd, "--port")),
                                    arg(cmd, "--host"), redis)
    if cmd[:3] == ["python", "manage.py", "bridge"]:
        return commands.bridge_cmd(arg(cmd, "--admin-url"), arg(cmd, "--sandbox"))
    if cmd[:3] == ["python", "manage.py", "migrate"]:
        return commands.migrate_cmd()
    if cmd[0] == "daphne":
        return commands.daphne_cmd(arg(cmd, "-b"), int(arg(cmd, "-p")))
    if cmd[0] == "gunicorn":
        host, port = arg(cmd, "-b").rsplit(":", 1)
        return commands.gunicorn_cmd(host, int(port), int(arg(cmd, "-w")),
                                     int(arg(cmd, "--threads")))
    raise AssertionError(f"no builder in labs/sandbox/commands.py makes {cmd}")


@pytest.mark.parametrize("path", [COMPOSE, PUBLISH, HOSTNET], ids=lambda p: p.name)
def test_compose_files_pass_the_compose_spec_schema(path):
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.exists(), "check-jsonschema comes with requirements.lock: run ./lab test"
    result = subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_accepts_the_files_merged():
    env = {"PATH": "/usr/bin:/bin", "SECRET_KEY": "x" * 50}
    for files in ([COMPOSE, PUBLISH], [COMPOSE, HOSTNET]):
        argv = ["docker-compose", "-p", "lblab-check"]
        for path in files:
            argv += ["-f", str(path)]
        result = subprocess.run([*argv, "config", "-q"], capture_output=True, text=True,
                                timeout=60, env=env)
        assert result.returncode == 0, result.stdout + result.stderr


def test_public_mode_needs_no_secret_from_the_operator(compose):
    env = compose["services"]["web"]["environment"]
    assert env["LBLAB_PUBLIC"] == "1" and env["DEBUG"] == "${DEBUG:-0}"
    assert env["SECRET_KEY"] == "${SECRET_KEY:-}"  # empty: made once in the state volume
    assert env["LBLAB_STATE_DIR"] == "/var/lib/lblab"
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


def test_services_are_all_there(compose):
    services = set(compose["services"])
    assert {"proxy", "web", "ws1", "ws2", "redis", "postgres", "migrate"} <= services
    assert {"b1", "b2", "b3", "b4"} <= services
    for name in (*SITE, "migrate"):
        env = compose["services"][name]["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]


def test_every_command_is_one_the_launcher_builds(compose, hostnet):
    checked = 0
    services = [*compose["services"].items(), *hostnet["services"].items()]
    for name, service in services:
        if name in ("postgres", "redis") or "command" not in service:
            assert name in ("postgres", "redis") or name in compose["services"], name
            continue
        cmd = service["command"]
        assert isinstance(cmd, list), f"{name}: write the command as a list (exec form)"
        assert cmd == expected_command(cmd), name
        checked += 1
    assert checked >= 17  # 9 in compose.yml, 8 in the override (migrate keeps its own)


def _published(publish: dict) -> set[int]:
    return {int(p.split(":")[-1].split('"')[0]) for p in publish["services"]["proxy"]["ports"]}


def test_the_front_door_matches_the_services(compose):
    services = compose["services"]
    front = yaml.safe_load(FRONT.read_text())
    assert arg(services["proxy"]["command"], "--config") == "docker/front.yaml"
    # compose.override.yml publishes exactly the front door's two listeners.
    publish = yaml.safe_load(PUBLISH.read_text())
    assert _published(publish) == {int(l["bind"].rsplit(":", 1)[1])
                                   for l in front["listeners"].values()}
    # /ws/ goes to both daphne workers, the rest to gunicorn, in the proxy's namespace.
    routes = front["routes"]
    ws_route = next(r for r in routes.values() if r.get("match", {}).get("path_prefix") == "/ws/")
    assert [b["address"] for b in front["pools"][ws_route["forward"]]["backends"]] == \
        [f"127.0.0.1:{arg(services[name]['command'], '-p')}" for name in ("ws1", "ws2")]
    web_port = arg(services["web"]["command"], "-b").rsplit(":", 1)[1]
    assert [b["address"] for b in front["pools"]["web"]["backends"]] == [f"127.0.0.1:{web_port}"]
    for name in SITE:
        assert services[name]["network_mode"] == "service:proxy"
        assert services[name]["environment"]["LBLAB_ADMIN_URL"] == \
            f"http://{front['admin']['listen']}"
        assert "state:/var/lib/lblab" in services[name]["volumes"]
    # The lab listener's pool is the toy backend services, by name and port.
    lab = {b["name"]: b["address"] for b in front["pools"]["lab"]["backends"]}
    for name, address in lab.items():
        cmd = services[name]["command"]
        assert address == f"{name}:{arg(cmd, '--port')}"
        assert arg(cmd, "--host") == "0.0.0.0"


def test_every_service_has_a_health_check_and_a_restart_policy(compose):
    for name, service in compose["services"].items():
        if name == "migrate":  # runs once; tried again only if it failed
            assert service["restart"] == "on-failure"
            assert service["deploy"]["restart_policy"]["condition"] == "on-failure"
            continue
        assert "healthcheck" in service, name
        assert service["restart"] == "unless-stopped", name
        assert service["deploy"]["restart_policy"]["condition"] == "any", name


def test_the_test_override_is_the_same_deployment_on_loopback(compose, hostnet):
    front = yaml.safe_load(FRONT.read_text())
    local = yaml.safe_load(FRONT_HOSTNET.read_text())
    assert _strip_addresses(local) == _strip_addresses(front)
    ports = {}
    for name, service in hostnet["services"].items():
        assert service["network_mode"] == "host", name
        text = json.dumps(service)
        for port in map(int, re.findall(r"\b(30[0-9]{3})\b", text)):
            assert 30700 <= port <= 30799, f"{name}: port {port} is outside 30700-30799"
        if "command" in service:
            ports[name] = service["command"]
    assert set(hostnet["services"]) == set(compose["services"])
    addresses = [local["admin"]["listen"], *(l["bind"] for l in local["listeners"].values()),
                 *(b["address"] for p in local["pools"].values() for b in p["backends"])]
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses
    assert [b["address"] for b in local["pools"]["ws"]["backends"]] == \
        [f"127.0.0.1:{arg(ports[n], '-p')}" for n in ("ws1", "ws2")]
    assert [b["address"] for b in local["pools"]["lab"]["backends"]] == \
        [f"127.0.0.1:{arg(ports[n], '--port')}" for n in ("b1", "b2", "b3", "b4")]


def test_the_compose_front_door_is_the_launchers_with_a_second_daphne():
    compose_front = _strip_addresses(yaml.safe_load(FRONT.read_text()))
    launcher = _strip_addresses(yaml.safe_load(LAUNCHER_FRONT.read_text()))
    assert [b["name"] for b in compose_front["pools"]["ws"]["backends"]] == ["ws1", "ws2"]
    compose_front["pools"]["ws"]["backends"] = compose_front["pools"]["ws"]["backends"][:1]
    assert compose_front == launcher


@pytest.mark.parametrize("path", [FRONT, FRONT_HOSTNET, LAUNCHER_FRONT], ids=lambda p: p.name)
def test_front_door_yaml_is_a_valid_proxy_config(path):
    from proxy.config import load_config_file

    config = load_config_file(str(path))
    assert set(config.listeners) == {"front", "lab"}


def _strip_addresses(config: dict) -> dict:
    config = yaml.safe_load(yaml.safe_dump(config))
    config["admin"].pop("listen", None)
    config["admin"].pop("request_history", None)  # place() sets a sandbox default
    for listener in config["listeners"].values():
        listener.pop("bind")
    for pool in config["pools"].values():
        for backend in pool.get("backends", []):
            backend.pop("address")
    return config


def test_launcher_front_door_runs_the_compose_topology_and_commands(tmp_path):
    launcher = Launcher(LabOptions(front_door=True, port=18000, proxy_port=18080, admin_port=19900,
                                   backend_ports=[19001, 19002, 19003, 19004], bridge="process",
                                   state_dir=str(tmp_path)))
    ex = launcher.exe
    parts = launcher.plan_parts()
    assert parts["web"].argv == commands.gunicorn_cmd("127.0.0.1", 18001, gunicorn=ex["gunicorn"])
    assert parts["ws"].argv == commands.daphne_cmd("127.0.0.1", 18002, daphne=ex["daphne"])
    assert parts["bridge"].argv == commands.bridge_cmd("http://127.0.0.1:19900", "default",
                                                       python=ex["python"])
    # Same listeners, routes, pools and settings as compose-front.yaml; only addresses differ.
    local = topology.place(topology.front_door_config("127.0.0.1:18001", "127.0.0.1:18002"),
                           "127.0.0.1", {"proxy": 18080, "admin": 19900, "listener.front": 18000,
                                         "b1": 19001, "b2": 19002, "b3": 19003, "b4": 19004})
    assert _strip_addresses(local) == _strip_addresses(topology.load_example("compose-front"))
    assert local["listeners"]["front"]["bind"] == "127.0.0.1:18000"
    assert local["listeners"]["lab"]["bind"] == "127.0.0.1:18080"
    assert [b["address"] for b in local["pools"]["lab"]["backends"]] == \
        [f"127.0.0.1:{p}" for p in (19001, 19002, 19003, 19004)]
    assert local["pools"]["ws"]["backends"][0]["address"] == "127.0.0.1:18002"
    assert topology.validate(local) == []


def test_default_launcher_runs_daphne_with_the_builder(tmp_path):
    launcher = Launcher(LabOptions(port=18000, state_dir=str(tmp_path), bridge="embedded"))
    parts = launcher.plan_parts()
    assert set(parts) == {"site"}
    assert parts["site"].argv == commands.daphne_cmd("127.0.0.1", 18000,
                                                     daphne=launcher.exe["daphne"])
