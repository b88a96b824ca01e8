"""Admin verbs fed anything JSON can hold: the change is applied or refused with
ConfigError (422), the running config unchanged on refusal; nothing else escapes
(which the admin API would answer with 500)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from proxy.config import ConfigError, load_config, to_data
from proxy.runtime import Runtime

CONFIG = """
listeners: {web: {bind: "127.0.0.1:0", routes: [all]}}
routes: {all: {forward: web}}
pools:
  web:
    backends:
      - {name: b1, address: "127.0.0.1:1"}
      - {name: b2, address: "127.0.0.1:2"}
"""

scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=20) | st.sampled_from(["9" * 5000, "1s", "127.0.0.1:1:2", "\r\n"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=20)
keys = st.sampled_from(["name", "address", "weight", "state", "tls", "proxy_protocol",
                        "algorithm", "table_size", "hash_key", "virtual_nodes", "decay_time",
                        "health", "outlier", "sticky", "slow_start", "timeouts", "retries",
                        "panic_threshold", "max_connections_per_backend", "x"])
bodies = st.dictionaries(keys, values, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(verb=st.sampled_from(["add_backend", "set_weight", "set_balancer", "set_pool"]),
       body=bodies, weight=values)
def test_verbs_apply_or_refuse_whole(verb, body, weight):
    runtime = Runtime(load_config(CONFIG))
    before = to_data(runtime.config)
    try:
        if verb == "add_backend":
            runtime.add_backend("web", body)
        elif verb == "set_weight":
            runtime.set_weight("web", "b1", weight)
        elif verb == "set_balancer":
            runtime.set_balancer("web", {"algorithm": "maglev", **body})
        else:
            runtime.set_pool_settings("web", {k: v for k, v in body.items() if k != "backends"})
    except ConfigError as exc:
        assert exc.errors
        assert to_data(runtime.config) == before
