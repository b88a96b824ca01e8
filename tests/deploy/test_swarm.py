"""Docker Swarm mode on a single-node swarm (``docker swarm init --advertise-addr
127.0.0.1``), made once for the module:

* the swarm driver (labs/sandbox/swarm.py): a learner's sandbox is a Swarm service with the
  reservations and limits asked for, on an internal network of its own (no route out),
  reached through its gateway service on the node's address; its proxy balances over its
  backends, its admin API and event stream answer, a part restarts alone; a sandbox no node
  has room for is refused; stop leaves no service, network or volume;
* compose.yml deployed as a Swarm stack, with the test override's loopback ports and
  compose.swarm.yml (the site on the manager's host network), merged into one stack file by
  docker/stackfile.py: the stack's services converge, the front door serves the dashboard
  and the site answers healthy; then the stack, the swarm and everything they made are gone.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from docker import stackfile
from docker.engine import site_env
from labs.framework import registry
from labs.framework.runner import RunOptions, run_lab
from labs.framework.watchdog import PartWatch
from labs.sandbox import SandboxError, SandboxLimit
from labs.sandbox.swarm import LABEL, SwarmDriver, SwarmLimits, container_name, gateway_name
from tests.deploy.learner import dashboard_streams, set_up_live_sandbox

REPO = Path(__file__).resolve().parents[2]
STACK = "lblabswarm"
FILES = ["compose.yml", "compose.hostnet.yml", "compose.swarm.yml"]
PORTS = (32100, 32199)  # the swarm driver's gateways, on the node's address (127.0.0.1)
MB = 1024 * 1024


def status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_until(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def swarm(engine):
    engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
    try:
        yield engine
    finally:
        engine.docker("swarm", "leave", "--force", check=False, timeout=120)


@pytest.fixture
def driver(swarm, tmp_path):
    drv = SwarmDriver(state_dir=tmp_path, port_range=PORTS, docker_host=swarm.host,
                      limits=SwarmLimits(memory_mb=160, cpus=0.5, pids=64,
                                         reserve_memory_mb=80, reserve_cpus=0.1),
                      start_timeout=120)
    yield drv
    for sb in drv.list():
        drv.stop(sb.id)


@pytest.mark.timeout(600)
def test_a_sandbox_is_a_swarm_service_with_limits_reached_on_its_node(swarm, driver, tmp_path):
    sb = driver.create("learner-1", backends=3)
    print(f"swarm sandbox start: {sb.start_seconds} s")
    # The node joined with 127.0.0.1: the gateway listens there.
    assert sb.proxy_url.startswith("http://127.0.0.1:") and sb.host == "127.0.0.1"

    # The manager has the reservations it placed the task by, and the limits.
    spec = json.loads(swarm.docker("service", "inspect", container_name("learner-1")).stdout)[0]
    resources = spec["Spec"]["TaskTemplate"]["Resources"]
    assert resources == {
        "Limits": {"MemoryBytes": 160 * MB, "NanoCPUs": 500_000_000, "Pids": 64},
        "Reservations": {"MemoryBytes": 80 * MB, "NanoCPUs": 100_000_000}}
    gateway = json.loads(swarm.docker("service", "inspect", gateway_name("learner-1")).stdout)[0]
    node = json.loads(swarm.docker("node", "inspect", "self").stdout)[0]["ID"]
    assert gateway["Spec"]["TaskTemplate"]["Placement"]["Constraints"] == [f"node.id=={node}"]

    # Traffic through its proxy reaches its backends (once their first health checks
    # passed); the admin API and the event stream answer through the gateway.
    deadline = time.monotonic() + 60
    while status(sb.proxy_url + "/") != 200:
        assert time.monotonic() < deadline, "the sandbox's proxy never served a request"
        time.sleep(0.5)
    assert {get_json(sb.proxy_url + "/")["backend"] for _ in range(6)} == {"b1", "b2", "b3"}
    assert "pools" in json.dumps(get_json(sb.admin_url + "/state"))
    with urllib.request.urlopen(sb.admin_url + "/events?replay=50", timeout=10) as events:
        first = json.loads(events.readline())
    assert first.get("kind") or first.get("type"), first

    # Inside: an interface on its own internal network and loopback, no route anywhere
    # else; the limits in force in the container's cgroups.
    code, out = driver.exec("learner-1", ["python", "-c", (
        "import socket, pathlib\n"
        "print(sorted(l.split(':')[0].strip() for l in "
        "pathlib.Path('/proc/net/dev').read_text().splitlines()[2:]))\n"
        "print([l.split()[1] for l in pathlib.Path('/proc/net/route').read_text()"
        ".splitlines()[1:]])\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), 2)\n"
        "except OSError as exc:\n"
        "    print('unreachable', exc.errno)\n")])
    assert code == 0, out
    interfaces, routes, reach = out.split("\n")[:3]
    assert interfaces == "['eth0', 'lo']", out
    assert "00000000" not in eval(routes), out  # no default route
    assert reach == "unreachable 101", out  # ENETUNREACH
    code, out = driver.exec("learner-1", ["sh", "-c",
                                          "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                                          "/sys/fs/cgroup/pids/pids.max 2>/dev/null || "
                                          "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max"])
    assert out.split() == [str(160 * MB), "64"], out
    mem = driver.measure("learner-1")
    print(f"swarm sandbox memory (idle, 3 backends): {mem['sandbox'] / 1e6:.1f} MB, its "
          f"gateway {mem['gateway'] / 1e6:.1f} MB")
    assert 0 < mem["sandbox"] < 160 * MB and 0 < mem["gateway"] < 64 * MB

    # A part restarted alone, through the gateway's control port.
    driver.restart_backend("learner-1", "b2")
    assert driver.parts("learner-1")["b2"]["alive"]
    with pytest.raises(SandboxError, match="already running"):
        driver.create("learner-1")

    driver.stop("learner-1")
    assert swarm.ids("service", "ls") == []
    assert not driver.list() and not (tmp_path / "swarm" / "learner-1").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(sb.admin_url + "/healthz", timeout=2)
    left = swarm.inventory()
    assert left == {"containers": [], "services": [], "networks": [], "volumes": []}, left


@pytest.mark.timeout(600)
def test_a_lab_run_on_a_swarm_service_is_graded_and_its_parts_crash_and_restart(swarm, driver):
    """A graded run with the swarm driver (its fix passes, as on processes), then what a
    run's watchdog and fault schedule do to the sandbox it kept: each part's state read
    through the gateway, a backend and the proxy killed and started again."""
    lab = registry.get("l4-path-routing")
    fix = run_lab(lab, lab.solution_text(), RunOptions(
        state_dir=driver.state_dir, sandbox_id="lab-l4s", driver=driver, label="solution",
        keep_sandbox=True))
    assert fix.result.passed, fix.result.headline + "\n" + "\n".join(fix.result.evidence)
    assert fix.sandbox["placement"]["driver"] == "swarm"
    assert fix.recording.stats.get("requests", 0) > 0
    print(f"l4-path-routing on swarm: fix {fix.seconds:.1f} s, sandbox start "
          f"{fix.sandbox['start_seconds']} s")

    sb = driver.get("lab-l4s")
    before = driver.part_states("lab-l4s")
    assert set(before) == {"proxy", "b1", "b2", "b3", "b4"}
    assert all(running for _, running in before.values()), before

    watch = PartWatch({part: pid for part, (pid, _) in before.items()})
    driver.kill_part("lab-l4s", "b3")
    deaths = watch.check(1.0, driver.part_states("lab-l4s"))
    assert [(d["part"], d["what"]) for d in deaths] == [
        ("b3", f"backend b3 (pid {before['b3'][0]}) stopped running")]

    driver.kill_part("lab-l4s", "proxy")
    assert driver.part_states("lab-l4s")["proxy"] == (before["proxy"][0], False)
    assert status(sb.admin_url + "/healthz") is None
    driver.restart_proxy("lab-l4s")
    pid, running = driver.part_states("lab-l4s")["proxy"]
    assert running and pid != before["proxy"][0]
    assert status(sb.admin_url + "/healthz") == 200

    driver.stop("lab-l4s")
    assert swarm.ids("service", "ls") == []


@pytest.mark.timeout(300)
def test_a_sandbox_no_node_has_room_for_is_refused(swarm, tmp_path):
    greedy = SwarmDriver(state_dir=tmp_path, port_range=PORTS, docker_host=swarm.host,
                         limits=SwarmLimits(memory_mb=1024 * 1024, reserve_memory_mb=1024 * 1024),
                         start_timeout=120)
    with pytest.raises(SandboxLimit, match="no node of the swarm has room"):
        greedy.create("too-big", backends=1)
    assert greedy.list() == [] and swarm.ids("service", "ls") == []


@pytest.mark.timeout(1200)
def test_the_compose_file_deploys_as_a_swarm_stack(swarm, tmp_path):
    engine = swarm
    stack_file = tmp_path / "stack.yml"
    stack_file.write_text(stackfile.dump(stackfile.stack([REPO / name for name in FILES])))
    try:
        engine.docker("stack", "deploy", "-c", str(stack_file), STACK, timeout=300,
                      env=site_env(engine, tmp_path / "state"))
        services = engine.docker("stack", "services", STACK, "--format",
                                 "{{.Name}} {{.Replicas}}").stdout.split("\n")
        names = {line.split()[0].removeprefix(f"{STACK}_") for line in services if line}
        assert {"proxy", "web", "ws1", "ws2", "postgres", "redis", "migrate"} <= names

        def converged():
            rows = engine.docker("stack", "services", STACK, "--format",
                                 "{{.Name}} {{.Replicas}}").stdout.split()
            pairs = dict(zip(rows[::2], rows[1::2]))
            running = {k: v for k, v in pairs.items() if not k.endswith("_migrate")}
            return all(v.split("/")[0] == v.split("/")[1] for v in running.values()) and pairs

        try:
            wait_until("every service of the stack running", converged, timeout=600)
        except AssertionError as exc:
            tasks = engine.docker("stack", "ps", STACK, "--no-trunc", "--format",
                                  "{{.Name}} {{.CurrentState}} {{.Error}}", check=False).stdout
            raise AssertionError(f"{exc}\n{tasks}") from None
        wait_until("the site healthy behind the stack's front door",
                   lambda: status("http://127.0.0.1:30700/healthz") == 200, timeout=300)
        assert status("http://127.0.0.1:30700/") == 200
        health = urllib.request.urlopen("http://127.0.0.1:30702/healthz", timeout=30).read()
        assert health == b"ok\n"

        # A learner's sandbox, set up through the stack's site, is a Swarm service of its
        # own (the site runs the swarm driver); their dashboard streams it.
        answer, cookie = set_up_live_sandbox()
        sandbox = answer["sandbox"]
        service = json.loads(engine.docker("service", "inspect", container_name(sandbox)).stdout)
        assert service[0]["Spec"]["TaskTemplate"]["Resources"]["Reservations"]["MemoryBytes"] > 0
        assert answer["proxy_url"].startswith("http://127.0.0.1:307")
        assert dashboard_streams(sandbox, answer["proxy_url"], cookie)["sandbox"] == sandbox
    finally:
        # Learners' sandboxes are the site's, not the stack's: `stack rm` leaves them.
        for name in engine.ids("service", "ls", "--filter", f"label={LABEL}"):
            engine.docker("service", "rm", name, check=False)
        wait_until("the sandboxes' containers gone",
                   lambda: not engine.ids("ps", "-a", "--filter", f"label={LABEL}"), timeout=120)
        for network in engine.ids("network", "ls", "--filter", f"label={LABEL}"):
            engine.docker("network", "rm", network, check=False)
        for volume in engine.ids("volume", "ls", "--filter", f"label={LABEL}"):
            engine.docker("volume", "rm", "-f", volume, check=False)
        engine.docker("stack", "rm", STACK, check=False, timeout=120)
        wait_until("the stack's containers gone",
                   lambda: not engine.ids("ps", "-a", "--filter",
                                          f"label=com.docker.stack.namespace={STACK}"),
                   timeout=120)
        for volume in engine.ids("volume", "ls", "--filter", f"label=com.docker.stack.namespace={STACK}"):
            engine.docker("volume", "rm", "-f", volume, check=False)
    left = engine.inventory()
    assert left == {"containers": [], "services": [], "networks": [], "volumes": []}, left
