"""A sandbox with several balancers: each proxy its own process, config, listener and admin
API over the same toy backends, a floating port no one binds yet, and each one stopped,
killed and restarted alone."""
from __future__ import annotations

import json

import pytest

from labs.sandbox import SandboxError, SandboxService, procs
from tests.labs.test_sandbox import START_TIMEOUT, get, processes_mentioning, wait_until


@pytest.fixture
def service(tmp_path):
    svc = SandboxService(tmp_path / "state", max_sandboxes=3, start_timeout=START_TIMEOUT)
    yield svc
    for sb in svc.list():
        svc.stop(sb.id, grace=3.0)
    leftovers = processes_mentioning(str(tmp_path))
    assert not leftovers, f"processes left behind: {leftovers}"


def test_two_balancers_share_the_backends_and_answer_each_on_its_own_ports(service):
    sb = service.create("pair", backends=2, extra_proxies=["lb2"], floating=["vip"])
    assert sb.part_names == ["proxy", "lb2", "b1", "b2"]
    assert set(sb.proxy_ports("lb2")) == {"proxy", "admin"}
    ports = [*sb.proxy_ports("proxy").values(), *sb.proxy_ports("lb2").values(),
             sb.floating["vip"], sb.ports["b1"], sb.ports["b2"]]
    assert len(set(ports)) == len(ports)  # every part on a port of its own
    # Each balancer routes to the same toy backends, through its own listener.
    for url in (sb.proxy_url, sb.proxy_url_of("lb2")):
        wait_until(lambda: get(url, "/")[0] == 200, what=f"{url} routes")
        served = {json.loads(get(url, "/")[2])["backend"] for _ in range(8)}
        assert served == {"b1", "b2"}
    assert get(sb.admin_url_of("lb2"), "/healthz")[0] == 200
    # The floating port is reserved, not bound: the balancer that takes it binds it.
    assert procs.port_free(sb.host, sb.floating["vip"])
    assert all(p["alive"] for p in service.parts("pair").values())


def test_one_balancer_killed_and_restarted_alone(service):
    sb = service.create("pair2", backends=1, extra_proxies=["lb2"])
    first, old = sb.pids["proxy"], sb.pids["lb2"]
    service.kill_part("pair2", "lb2")
    wait_until(lambda: not sb.alive("lb2"), what="lb2 gone")
    parts = service.parts("pair2")
    assert not parts["lb2"]["alive"] and parts["proxy"]["alive"] and parts["b1"]["alive"]
    sb = service.restart_part("pair2", "lb2")
    assert sb.pids["lb2"] != old and sb.pids["proxy"] == first
    assert service.parts("pair2")["lb2"]["alive"]
    assert get(sb.proxy_url_of("lb2"), "/")[0] in (200, 503)  # its listener is back


def test_a_balancer_may_not_take_a_backends_name(service):
    with pytest.raises(SandboxError, match="'b1'"):
        service.create("bad", backends=2, extra_proxies=["b1"])
    assert service.list() == []
