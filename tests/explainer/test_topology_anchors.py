"""A real proxy running proxy/examples/anchors.yaml, drawn from its own GET /state.

The example is loaded as written, only its ports moved to free ones (and its health
interval shortened so the test does not wait on 2s probes); four real toy backends
serve it. The drawing shows zones, the standby backup and the queue; with the two
zone-b primaries stopped, the next drawing shows the backup serving.
"""
import json
import urllib.request

import pytest
import yaml

from labs import diagrams
from tests.explainer.parts import REPO, Lab, free_port, wait_until


def get_state(lab: Lab) -> dict:
    with urllib.request.urlopen(f"{lab.admin_url}/state", timeout=5) as resp:
        return json.load(resp)


@pytest.fixture
def anchors(tmp_path):
    lab = Lab(dir=tmp_path)
    config = yaml.safe_load((REPO / "proxy" / "examples" / "anchors.yaml").read_text())
    try:
        for name in ("b1", "b2", "b3", "b4"):
            lab.start_backend(name)
        lab.ports()
        config["admin"]["listen"] = f"127.0.0.1:{lab.admin_port}"
        config["listeners"]["node-a"]["bind"] = f"127.0.0.1:{lab.proxy_port}"
        for name in ("node-b", "behind-nlb"):
            config["listeners"][name]["bind"] = f"127.0.0.1:{free_port()}"
        web = config["pools"]["web"]
        web["health"]["interval"] = "200ms"
        for backend in web["backends"]:
            backend["address"] = f"127.0.0.1:{lab.backends[backend['name']]}"
        config["pools"]["relay"]["backends"][0]["address"] = f"127.0.0.1:{lab.backends['b1']}"
        lab.start_proxy(config)
        yield lab
    finally:
        lab.stop_all()


def web_backends(state: dict) -> dict[str, dict]:
    return {b["name"]: b for b in state["pools"]["web"]["backends"]}


def test_anchors_topology_from_a_real_proxy(anchors):
    def all_healthy():
        state = get_state(anchors)
        return state if all(b["health"] == "healthy" for b in web_backends(state).values()) \
            else None

    def backups_serving():
        state = get_state(anchors)
        return state if state["pools"]["web"]["backup_active"] else None

    state = wait_until(all_healthy, what="the four backends of pool web healthy")
    text = diagrams.topology(state)
    assert '["zone a"]' in text and '["zone b"]' in text
    assert "<br/>zone a" in text and "<br/>zone b" in text  # the two listener nodes
    assert "cross-zone off" in text
    assert "queue: 0/50 waiting · waits ≤ 2s" in text
    assert "0/10 in flight" in text and "0/100 open TCP conn" in text
    assert "backups standby" in text and '-.->|"backup · standby"|' in text

    anchors.kill("b2")
    anchors.kill("b3")
    state = wait_until(backups_serving, what="the backups of pool web serving")
    text = diagrams.topology(state)
    assert "BACKUPS SERVING" in text and '-->|"backup · serving now"|' in text
    assert "b2 · UNHEALTHY" in text and "b3 · UNHEALTHY" in text
