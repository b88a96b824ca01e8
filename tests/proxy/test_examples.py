"""Every shipped example is a valid config, and every algorithm and sticky mode has one."""
import pathlib
import typing

import pytest

from proxy.balancers import REGISTRY
from proxy.config import StickyConfig, load_config_file

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "proxy" / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
MODES = typing.get_args(StickyConfig.model_fields["mode"].annotation)
# The lab examples (one per algorithm and sticky mode) share the default topology.
LAB_FILES = [EXAMPLES / f"{name}.yaml" for name in sorted(REGISTRY)] + \
    [EXAMPLES / f"sticky-{mode}.yaml" for mode in MODES]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_loads(path):
    load_config_file(str(path))
    assert path.read_text().startswith("#")  # it explains itself


@pytest.mark.parametrize("path", LAB_FILES, ids=[p.name for p in LAB_FILES])
def test_lab_example_has_the_default_topology(path):
    config = load_config_file(str(path))
    assert config.admin.listen == ("127.0.0.1", 9900)
    assert [l.bind for l in config.listeners.values()] == [("127.0.0.1", 8080)]
    for pool in config.pools.values():
        assert sorted(b.name for b in pool.backends) == ["b1", "b2", "b3", "b4"]
        assert sorted(b.address for b in pool.backends) == \
            [("127.0.0.1", port) for port in (9001, 9002, 9003, 9004)]


@pytest.mark.parametrize("algorithm", sorted(REGISTRY))
def test_every_algorithm_has_an_example(algorithm):
    path = EXAMPLES / f"{algorithm}.yaml"
    assert path.exists(), f"write proxy/examples/{algorithm}.yaml"
    config = load_config_file(str(path))
    assert {p.balancer.algorithm for p in config.pools.values()} == {algorithm}


@pytest.mark.parametrize("mode", MODES)
def test_every_sticky_mode_has_an_example(mode):
    path = EXAMPLES / f"sticky-{mode}.yaml"
    assert path.exists(), f"write proxy/examples/sticky-{mode}.yaml"
    config = load_config_file(str(path))
    assert {p.sticky.mode for p in config.pools.values()} == {mode}
