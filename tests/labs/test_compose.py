"""compose.yml: valid against the compose spec, and every service runs exactly the command
the launcher runs (labs/sandbox/commands.py), with the front door wired as
proxy/examples/compose-front.yaml says."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labs.sandbox import commands, topology
from labs.sandbox.launcher import LabOptions, Launcher

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yml"
FRONT = REPO / "proxy" / "examples" / "compose-front.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


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
        return commands.gunicorn_cmd(host, int(port), int(arg(cmd, "-w")))
    raise AssertionError(f"no builder in labs/sandbox/commands.py makes {cmd}")


def test_compose_passes_the_compose_spec_schema():
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.exists(), "check-jsonschema comes with requirements.lock: run ./lab test"
    result = subprocess.run([str(exe), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_services_are_all_there(compose):
    services = set(compose["services"])
    assert {"proxy", "web", "ws", "bridge", "redis", "postgres", "migrate"} <= services
    assert {"b1", "b2", "b3", "b4"} <= services
    for name in ("web", "ws", "bridge", "migrate"):
        env = compose["services"][name]["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]


def test_every_command_is_one_the_launcher_builds(compose):
    checked = 0
    for name, service in compose["services"].items():
        if "command" not in service:
            assert "image" in service and "build" not in service, f"{name}: runs its image"
            continue
        cmd = service["command"]
        assert isinstance(cmd, list), f"{name}: write the command as a list (exec form)"
        assert cmd == expected_command(cmd), name
        checked += 1
    assert checked >= 9


def test_the_front_door_matches_the_services(compose):
    services = compose["services"]
    front = topology.load_example("compose-front")
    # The proxy runs this very file and publishes its two listeners.
    assert arg(services["proxy"]["command"], "--config") == "proxy/examples/compose-front.yaml"
    published = {int(p.split(":")[-1]) for p in services["proxy"]["ports"]}
    assert published == {int(l["bind"].rsplit(":", 1)[1]) for l in front["listeners"].values()}
    # /ws/ goes to daphne, the rest to gunicorn, both in the proxy's network namespace.
    routes = front["routes"]
    ws_route = next(r for r in routes.values() if r.get("match", {}).get("path_prefix") == "/ws/")
    assert [b["address"] for b in front["pools"][ws_route["forward"]]["backends"]] == \
        [f"127.0.0.1:{arg(services['ws']['command'], '-p')}"]
    web_port = arg(services["web"]["command"], "-b").rsplit(":", 1)[1]
    assert [b["address"] for b in front["pools"]["web"]["backends"]] == [f"127.0.0.1:{web_port}"]
    for name in ("web", "ws", "bridge"):
        assert services[name]["network_mode"] == "service:proxy"
    assert arg(services["bridge"]["command"], "--admin-url") == f"http://{front['admin']['listen']}"
    # The lab listener's pool is the toy backend services, by name and port.
    lab = {b["name"]: b["address"] for b in front["pools"]["lab"]["backends"]}
    for name, address in lab.items():
        cmd = services[name]["command"]
        assert address == f"{name}:{arg(cmd, '--port')}"
        assert arg(cmd, "--host") == "0.0.0.0"


def test_front_door_yaml_is_a_valid_proxy_config():
    from proxy.config import load_config_file

    config = load_config_file(str(FRONT))
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
