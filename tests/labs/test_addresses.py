"""The address rule: a learner's config may only point at their own sandbox's addresses.

Pure checks (labs/sandbox/addresses.py), then every input path that accepts an address:
the lab editor's documents (placed exactly as the runner places them), the dashboard's
add-backend control and a lesson preset against a real sandbox.
"""
from __future__ import annotations

import itertools

import pytest
import yaml

from labs.framework import registry
from labs.framework.runner import place as runner_place, split_document
from labs.sandbox import addresses, topology
from labs.sandbox.service import Sandbox


def fake_sandbox(config: dict, names: list[str], host: str = "127.0.0.1") -> Sandbox:
    ports = itertools.count(21000)
    keys = topology.listener_port_keys(config, names)
    allocated = {"proxy": next(ports), "admin": next(ports), **{n: next(ports) for n in names}}
    for key in keys.values():
        allocated.setdefault(key, next(ports))
    return Sandbox(id="lab-x", host=host, proxy_url=f"http://{host}:{allocated['proxy']}",
                   admin_url=f"http://127.0.0.1:{allocated['admin']}",
                   backends={n: f"http://127.0.0.1:{allocated[n]}" for n in names},
                   ports=allocated,
                   listeners={name: f"http://{host}:{allocated[key]}" for name, key in keys.items()})


SB = fake_sandbox(topology.default_config(["b1", "b2"]), ["b1", "b2"])


@pytest.mark.parametrize("address", [f"127.0.0.1:{SB.ports['b1']}", f"localhost:{SB.ports['b2']}",
                                     f"[::1]:{SB.ports['b1']}"])
def test_own_backends_pass_in_any_spelling_of_loopback(address):
    assert addresses.check_backend(address, SB) == []


@pytest.mark.parametrize("address", ["192.0.2.1:80", f"127.0.0.2:{SB.ports['b1']}",
                                     f"127.0.0.1:{SB.ports['admin']}",  # its own admin API
                                     f"127.0.0.1:{SB.ports['proxy']}",  # itself, a loop
                                     "127.0.0.1:8000", "example.org:443", "nonsense"])
def test_anything_else_is_refused_saying_which_backends_are_yours(address):
    (error,) = addresses.check_backend(address, SB, "pools.web.backends[0].address")
    assert error["path"] == "pools.web.backends[0].address"
    assert f"b1 = 127.0.0.1:{SB.ports['b1']}" in error["message"] or "host:port" in error["message"]


def test_a_whole_config_reports_every_outside_address_with_its_path():
    config = topology.place(topology.default_config(["b1", "b2"]), "127.0.0.1",
                            {**SB.ports}, inner_host="127.0.0.1")
    assert addresses.check_config(config, SB) == []
    config["pools"]["web"]["backends"].append({"name": "evil", "address": "192.0.2.1:80"})
    config["listeners"]["extra"] = {"bind": "0.0.0.0:80", "pool": "web"}
    config["admin"]["listen"] = "127.0.0.1:1"
    paths = [e["path"] for e in addresses.check_config(config, SB)]
    assert paths == ["listeners.extra.bind", "pools.web.backends[2].address", "admin.listen"]


@pytest.mark.parametrize("lab", registry.all_labs(), ids=lambda lab: lab.slug)
def test_every_lab_topology_and_solution_stays_inside_its_sandbox(lab):
    for name in ("topology_text", "solution_text"):
        config, _ = split_document(yaml.safe_load(getattr(lab, name)()))
        sb = fake_sandbox(config, lab.backend_names)
        assert addresses.check_config(runner_place(config, sb, "127.0.0.1"), sb) == [], name


def test_the_lab_editor_refuses_a_backend_outside_the_sandbox():
    lab = registry.all_labs()[0]
    config, _ = split_document(yaml.safe_load(lab.topology_text()))
    pool = next(iter(config["pools"].values()))
    pool["backends"].append({"name": "outside", "address": "192.0.2.1:80"})
    sb = fake_sandbox(config, lab.backend_names)
    errors = addresses.check_config(runner_place(config, sb, "127.0.0.1"), sb)
    assert len(errors) == 1 and "192.0.2.1:80 is not one of your sandbox's backends" in errors[0]["message"]
