"""The swarm driver's requests to the manager, and what it reads from its answers
(labs/sandbox/swarm.py), without an engine: tests/deploy/test_swarm.py runs them for real."""
from __future__ import annotations

from labs.sandbox.service import Sandbox
from labs.sandbox.swarm import (
    SwarmLimits,
    gateway_service,
    network_request,
    rehome,
    sandbox_service,
    task_view,
    waiting_for_room,
)

MB = 1024 * 1024


def test_a_sandbox_service_carries_its_limits_reservations_and_own_network():
    spec = sandbox_service("sb-1", "lblab:latest", SwarmLimits(memory_mb=160, cpus=0.5, pids=64,
                                                               reserve_memory_mb=80,
                                                               reserve_cpus=0.1),
                           {"files": {}}, ["node.labels.x==y"], "net-1", ["python", "run"])
    task = spec["TaskTemplate"]
    assert task["Resources"] == {
        "Limits": {"MemoryBytes": 160 * MB, "NanoCPUs": 500_000_000, "Pids": 64},
        "Reservations": {"MemoryBytes": 80 * MB, "NanoCPUs": 100_000_000}}
    assert task["Networks"] == [{"Target": "net-1"}]
    assert task["Placement"] == {"Constraints": ["node.labels.x==y"]}
    assert task["RestartPolicy"] == {"Condition": "none"}
    container = task["ContainerSpec"]
    assert container["User"] == "10001" and container["ReadOnly"] and container["CapabilityDrop"] == ["ALL"]
    assert container["Env"][0].startswith("LBLAB_SANDBOX_SEED={")
    assert container["Args"][-3:] == ["--", "python", "run"]  # seeded, then the container's own
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}


def test_its_network_is_internal_and_its_gateway_sits_on_its_node():
    assert network_request("sb-1", "net-1") == {
        "Name": "net-1", "Driver": "overlay", "Internal": True, "CheckDuplicate": True,
        "Labels": {"org.lblab.sandbox": "sb-1"}}
    gw = gateway_service("sb-1", "lblab:latest", "node-7", "10.1.2.3", {"admin": 30001,
                                                                        "proxy": 30000})
    task = gw["TaskTemplate"]
    assert task["Placement"] == {"Constraints": ["node.id==node-7"]}
    assert task["Networks"] == [{"Target": "host"}]
    args = task["ContainerSpec"]["Args"]
    assert args[args.index("--host") + 1] == "10.1.2.3"
    assert [a for a in args if "=" in a] == ["30000=proxy", "30001=admin"]


def test_a_record_moves_to_the_node_it_landed_on():
    sb = Sandbox(id="s", host="127.0.0.1", proxy_url="http://127.0.0.1:1", admin_url=
                 "http://127.0.0.1:2", backends={"b1": "http://127.0.0.1:3"},
                 ports={"proxy": 1, "admin": 2, "b1": 3},
                 listeners={"web": "http://127.0.0.1:1"})
    moved = rehome(sb, "10.0.0.5")
    assert (moved.host, moved.proxy_url, moved.admin_url) == (
        "10.0.0.5", "http://10.0.0.5:1", "http://10.0.0.5:2")
    assert moved.backends == {"b1": "http://10.0.0.5:3"}
    assert rehome(sb, "fd00::5").admin_url == "http://[fd00::5]:2"


def test_the_current_task_and_a_swarm_without_room():
    old = {"Version": {"Index": 3}, "Status": {"State": "failed"}}
    new = {"Version": {"Index": 9}, "Status": {
        "State": "pending", "Err": "no suitable node (insufficient resources on 1 node)"}}
    assert task_view([old, new]) is new and task_view([]) is None
    assert waiting_for_room(new) and not waiting_for_room(old)
