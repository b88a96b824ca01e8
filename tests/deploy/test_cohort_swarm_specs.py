"""What ``./lab cohort --engine swarm`` deploys (labs/cohort/deploy.py: ``Swarm``), without an
engine: the one stack file it merges from compose.yml, compose.hostnet.yml, compose.swarm.yml
and its own override, and how it finds the stack's containers. The run itself (a swarm of our
own engine, learners through the real site) is tests/deploy/test_cohort.py's swarm test."""
from __future__ import annotations

import shutil

import pytest

from labs.cohort import deploy

PORTS = "32100-32199"


@pytest.fixture
def swarm():
    target = deploy.make("swarm", sandbox_ports=PORTS, port_base=31000, say=lambda msg: None)
    yield target
    shutil.rmtree(target.root, ignore_errors=True)  # down() without an engine: the same


def test_the_swarm_engine_is_the_docker_deployment_as_a_stack(swarm):
    assert isinstance(swarm, deploy.Swarm) and isinstance(swarm, deploy.Docker)
    assert swarm.name == "swarm" and swarm.url == deploy.FRONT
    assert [p.name for p in swarm.files] == ["compose.yml", "compose.hostnet.yml",
                                             "compose.swarm.yml", "compose.cohort.yml"]
    # A stack's containers carry its namespace; a service's name is <stack>_<service>.
    assert swarm.owner_label == f"com.docker.stack.namespace={deploy.PROJECT}"
    assert f"{swarm.service_prefix}web" == "lblab-cohort_web"


def test_the_stack_gives_the_site_the_swarm_driver_and_the_cohorts_ports(swarm):
    stack = swarm.write_stack()
    assert swarm.stack_file.read_text().startswith("version:")
    services = stack["services"]
    assert {"proxy", "web", "ws1", "ws2", "postgres", "redis", "migrate",
            "b1", "b2", "b3", "b4"} <= set(services)
    for name in deploy.SITE_SERVICES:
        site = services[name]
        env = site["environment"]
        assert env["LBLAB_SANDBOX_DRIVER"] == "swarm"
        assert env["LBLAB_SANDBOX_PORTS"] == PORTS and env["LBLAB_TRUST_FORWARDED"] == "1"
        # The test override's loopback settings are merged in, not replaced.
        assert env["DATABASE_URL"].endswith("@127.0.0.1:30710/lblab")
        assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock"
        assert "${LBLAB_DOCKER_SOCKET:-/var/run/docker.sock}:/var/run/docker.sock" in site["volumes"]
        # On the manager's host network, as the socket's group (a stack has no group_add).
        assert site["networks"] == ["hostnet"]
        assert site["deploy"]["placement"]["constraints"] == ["node.role == manager"]
        assert site["user"] == "10001:${LBLAB_DOCKER_GID:-0}"
        assert not {"network_mode", "group_add", "pid"} & set(site)
    assert stack["networks"]["hostnet"] == {"external": True, "name": "host"}


def test_the_swarm_override_alone_names_the_driver_and_ports():
    override = deploy.swarm_override("31100-31999")
    assert set(override["services"]) == set(deploy.SITE_SERVICES)
    for site in override["services"].values():
        assert site == {"environment": {"LBLAB_SANDBOX_DRIVER": "swarm",
                                        "LBLAB_SANDBOX_PORTS": "31100-31999",
                                        "LBLAB_TRUST_FORWARDED": "1"}}
