"""Proxy configs for sandboxes: the example files with this sandbox's addresses put in.

A sandbox's proxy config starts from a template, an ordinary proxy config (by default
proxy/examples/default.yaml; the front door uses proxy/examples/compose-front.yaml), and
``place`` rewrites only addresses:

* ``admin.listen``            -> inner_host:ports["admin"] (inner_host: loopback, see service);
  ``admin.request_history`` defaults to 2,000 (a smaller sandbox under traffic)
* the *main* listener         -> host:ports["proxy"]; the main listener is the first one
                                 whose routes (or pool) reach a toy backend, else the first
* any other listener L        -> host:ports["listener.L"]
* a pool backend named like one of the sandbox's toy backends (b1, b2...) -> inner_host:port

Everything else (routes, balancer, health, stickiness) stays as the template says, so a lab
can hand over any config in the proxy's shape without knowing which ports it will get.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "proxy" / "examples"


def load_example(name: str) -> dict:
    with open(EXAMPLES / f"{name}.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def default_config(backend_names: list[str]) -> dict:
    """default.yaml with its pool holding exactly ``backend_names`` (settings of the first
    template backend copied to each)."""
    config = load_example("default")
    pool = config["pools"]["web"]
    template = dict(pool["backends"][0])
    pool["backends"] = [{**template, "name": name, "address": "127.0.0.1:1"}
                        for name in backend_names]
    return config


def front_door_config(web_address: str, ws_address: str) -> dict:
    """compose-front.yaml with the gunicorn (pool web) and daphne (pool ws) addresses given."""
    config = load_example("compose-front")
    for pool, address in (("web", web_address), ("ws", ws_address)):
        for backend in config["pools"][pool]["backends"]:
            backend["address"] = address
    return config


def _listener_pools(config: dict, listener: dict) -> list[str]:
    if listener.get("pool"):
        return [listener["pool"]]
    pools = []
    for rname in listener.get("routes") or []:
        route = (config.get("routes") or {}).get(rname) or {}
        if route.get("forward"):
            pools.append(route["forward"])
        pools += [t.get("pool") for t in route.get("split") or []]
    return pools


def main_listener(config: dict, toy_names: list[str]) -> str:
    listeners = config.get("listeners") or {}
    if not listeners:
        raise ValueError("the proxy config has no listeners")
    toys = set(toy_names)
    for name, listener in listeners.items():
        for pname in _listener_pools(config, listener or {}):
            backends = ((config.get("pools") or {}).get(pname) or {}).get("backends") or []
            if any(b.get("name") in toys for b in backends):
                return name
    return next(iter(listeners))


def listener_port_keys(config: dict, toy_names: list[str]) -> dict[str, str]:
    """listener name -> key in ``ports`` ("proxy" for the main one, "listener.NAME" else)."""
    main = main_listener(config, toy_names)
    return {name: "proxy" if name == main else f"listener.{name}"
            for name in config.get("listeners") or {}}


SANDBOX_REQUEST_HISTORY = 2000


def place(config: dict, host: str, ports: dict[str, int], inner_host: str | None = None) -> dict:
    """A copy of ``config`` with the sandbox's addresses (see the module doc)."""
    out = copy.deepcopy(config)
    toy_names = [k for k in ports if k not in ("proxy", "admin") and not k.startswith("listener.")]
    keys = listener_port_keys(out, toy_names)
    out.setdefault("admin", {})
    out["admin"] = {**(out["admin"] or {}), "listen": f"{inner_host or host}:{ports['admin']}"}
    # A learner's sandbox keeps the last 2,000 requests for lookup by id (the
    # proxy's default is 10,000): enough for the page and the graders, which
    # record from the live stream, and it keeps a busy sandbox near 80 MB.
    out["admin"].setdefault("request_history", SANDBOX_REQUEST_HISTORY)
    for name, listener in out["listeners"].items():
        listener["bind"] = f"{host}:{ports[keys[name]]}"
    for pool in (out.get("pools") or {}).values():
        for backend in (pool or {}).get("backends") or []:
            if backend.get("name") in ports and backend["name"] in toy_names:
                backend["address"] = f"{_connect(inner_host or host)}:{ports[backend['name']]}"
    return out


def _connect(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def validate(config: dict) -> list[str]:
    """The proxy's own verdict on a config (every problem with its path), [] when fine."""
    from proxy.config import ConfigError, parse_config

    try:
        parse_config(config)
    except ConfigError as exc:
        return exc.lines()
    return []
