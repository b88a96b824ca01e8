"""The I/O around several balancers in one lab run: floating address, DNS zone, load report.

Theory of operation
-------------------
These play the parts that sit *beside* the balancers in production, in threads of the
runner (like its autoscaler), on real sockets:

* ``floating_address``: keepalived's job. Before the traffic, the active balancer binds the
  floating address (a listener on the sandbox's floating port, through ``PUT /config``);
  the standby's keeper asks the active's admin ``/healthz`` for a heartbeat every interval
  (``lab.heartbeat``) and, when failover.Standby decides the active is dead, binds the
  same address on the standby. On one machine the "address" is a port only one process
  can bind at a time, which is what a VIP is to the network.
* ``dns_round_robin``: a health-checked DNS zone. Every ``check_interval_s`` it connects to
  each balancer's own listener; failover.ZoneHealth drops one after ``fall`` failures. The
  answer goes to ``zone.json`` in the run directory, where the traffic's resolvers read it
  once their cached copy (``lab.dns.ttl_s``) expires.
* ``load_report``: a shared, periodically refreshed view of load (a bulletin board, or
  agent checks): every ``sample_s`` the balancers' own counts of requests in flight
  (their ``/state``) are summed per backend; every ``refresh_s`` their mean over the
  interval is pushed to every balancer (``PUT /pools/POOL/load``), where
  ``balancer.load: reported`` reads it until the next one.

Each decision goes into the run's timeline (kind "ha", "dns" or "load") with its reason.

Why here and not in proxy/: a balancer pair's failover is not the balancer's job. In
production keepalived (VRRP) runs beside HAProxy and moves the address; the DNS zone and a
load report are other services again. The proxy only has to bind what it is told
(``PUT /config``) and read a report it is given (``balancer.load: reported``), so proxy/
stays one node and knows nothing of labs.
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labs.framework.failover import MASTER, HeartbeatSettings, Standby, ZoneHealth
from labs.sandbox import procs
from labs.sandbox.admin_client import AdminError

KINDS = ("floating_address", "dns_round_robin", "load_report")


def heartbeat_settings(settings: dict) -> HeartbeatSettings:
    hb = settings.get("heartbeat") or {}
    return HeartbeatSettings(float(hb.get("interval_s", 1.0)), float(hb.get("dead_after_s", 3.0)))


def check_settings(lab, settings: dict) -> list[tuple[str, str]]:
    """Problems of the pair's lab settings, before anything starts."""
    out: list[tuple[str, str]] = []
    kinds = {k for w in lab.spec.watchers for k in KINDS if getattr(w, k) is not None}
    if "floating_address" in kinds:
        out += heartbeat_settings(settings).problems()
    if "dns_round_robin" in kinds:
        ttl = float((settings.get("dns") or {}).get("ttl_s", 0))
        if not 0 <= ttl <= 86400:
            out.append(("lab.dns.ttl_s", f"give 0 to 86400 seconds, got {ttl:g}"))
    return out


def with_floating(config: dict, listener: str, name: str, bind: str) -> dict:
    """``config`` plus a copy of ``listener`` bound to the floating address, named ``name``."""
    out = copy.deepcopy(config)
    out["listeners"][name] = {**copy.deepcopy(out["listeners"][listener]), "bind": bind}
    return out


def prepare(run) -> None:
    """Before the traffic: the active holds the floating address; the zone is written."""
    for w in run.spec.watchers:
        if w.floating_address is not None:
            spec = w.floating_address
            _bind_floating(run, spec, spec["active"])
        if w.dns_round_robin is not None:
            nodes = list(w.dns_round_robin.get("nodes") or run.lab.proxy_names)
            write_zone(run, nodes, serial=0)


def start_watcher(run, watcher) -> bool:
    """Start ``watcher`` if it is one of this module's; False: not ours."""
    target = None
    if watcher.floating_address is not None:
        target, arg = _keep_floating, watcher.floating_address
    elif watcher.dns_round_robin is not None:
        target, arg = _keep_zone, watcher.dns_round_robin
    elif watcher.load_report is not None:
        target, arg = _report_load, watcher.load_report
    if target is None:
        return False
    th = threading.Thread(target=target, args=(run, arg), daemon=True, name=target.__name__)
    th.start()
    run._threads.append(th)
    return True


# ---------------------------------------------------------------- floating address

def _bind_floating(run, spec: dict, proxy: str) -> float:
    """Bind the floating address on ``proxy``; returns how long PUT /config took (s)."""
    address = spec.get("address", "vip")
    host = procs.url_host(run.sb.host)
    placed = with_floating(run.placed_for(proxy), spec.get("listener", "web"), address,
                           f"{host}:{run.sb.floating[address]}")
    began = time.monotonic()
    run.admins[proxy].put_config(placed)
    return time.monotonic() - began


def _keep_floating(run, spec: dict) -> None:
    active, standby = spec["active"], spec["standby"]
    address = spec.get("address", "vip")
    hb = heartbeat_settings(run.settings)
    admin_port = run.sb.proxy_ports(run.part_of(active))["admin"]
    host = procs.connect_host(run.sb.inner_host)
    keeper = Standby(hb, time.monotonic(), peer=active, address=f"{address} (port "
                     f"{run.sb.floating[address]})")
    run.mark("ha", f"{standby} watches {active}: a heartbeat every {hb.interval:g} s, dead "
             f"after {hb.dead_after:g} s", label="heartbeats start", chart=False,
             proxy=standby)
    while keeper.role != MASTER:
        wait = max(0.0, keeper.next_due - time.monotonic())
        if run._stop.wait(wait):
            return
        status, why = procs.http_status(host, admin_port, "/healthz",
                                        timeout=min(hb.interval, 1.0))
        decision = keeper.heard(time.monotonic(), status == 200,
                                "" if status == 200 else f"/healthz: {status or why}")
        if decision is None:
            continue
        run.mark("ha", f"{standby}: {decision.why}", label=(
            f"{standby} takes {address}" if decision.new == MASTER else
            f"{active} missed a heartbeat" if decision.missed else f"{active} answers again"),
            chart=decision.new == MASTER, proxy=standby, old=decision.old,
            new=decision.new, missed=decision.missed, silent_for=round(decision.silent_for, 3))
    try:
        took = _bind_floating(run, spec, standby)
    except AdminError as exc:
        run.mark("ha", f"{standby} could not bind {address}: {exc}", label=f"{address} bind "
                 "failed", proxy=standby)
        return
    run.mark("ha", f"{standby} now holds {address} (bound in {took * 1000:.0f} ms)",
             label=f"{standby} holds {address}", chart=False, proxy=standby, bound=True)


# ---------------------------------------------------------------- DNS zone

def write_zone(run, nodes: list[str], serial: int) -> None:
    from labs.framework.runner import ZONE_FILE

    path = Path(run.run_dir) / ZONE_FILE
    data = {"serial": serial, "answer": {n: run.sb.proxy_url_of(run.part_of(n)) for n in nodes}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _keep_zone(run, spec: dict) -> None:
    nodes = list(spec.get("nodes") or run.lab.proxy_names)
    every = float(spec.get("check_interval_s", 0.2))
    zone = ZoneHealth(nodes, fall=int(spec.get("fall", 2)), rise=int(spec.get("rise", 2)))
    host = procs.connect_host(run.sb.host)
    ports = {n: run.sb.proxy_ports(run.part_of(n))["proxy"] for n in nodes}
    serial = 0
    while not run._stop.wait(every):
        for node in nodes:
            change = zone.checked(node, procs.tcp_open(host, ports[node], timeout=every))
            if change is None:
                continue
            serial += 1
            write_zone(run, zone.answer(), serial)
            run.mark("dns", f"DNS: {change.why}; the answer is now "
                     f"{', '.join(zone.answer()) or 'empty'}",
                     label=f"DNS drops {node}" if not change.serving else f"DNS adds {node}",
                     proxy=node, serving=change.serving)


# ---------------------------------------------------------------- load report

def total_loads(states: list[dict], pool: str) -> dict[str, int]:
    """Requests in flight per backend of ``pool``, summed over the balancers' /state."""
    out: dict[str, int] = {}
    for state in states:
        for b in ((state.get("pools") or {}).get(pool) or {}).get("backends") or []:
            out[b["name"]] = out.get(b["name"], 0) + int(b.get("outstanding") or 0)
    return out


def average_loads(samples: list[dict[str, int]]) -> dict[str, float]:
    """Each backend's mean over the samples taken since the last report (to 0.01): what
    a load report says, a level over its interval rather than one instant's count."""
    names = sorted({name for sample in samples for name in sample})
    if not samples:
        return {}
    return {n: round(sum(s.get(n, 0) for s in samples) / len(samples), 2) for n in names}


def _report_load(run, spec: dict) -> None:
    """Sample the balancers' own counts every sample_s; every refresh_s push their mean
    (summed over the balancers) to every balancer: the shared report, as old as its
    interval."""
    pool = spec.get("pool", "web")
    every = float(spec.get("refresh_s", 1.0))
    sample_every = float(spec.get("sample_s", 0.1))
    samples: list[dict[str, int]] = []
    next_report = time.monotonic()

    def state_of(item):
        proxy, admin = item
        try:
            return admin.state()
        except AdminError as exc:
            run.mark("error", f"load report: {proxy} did not answer /state: {exc}",
                     chart=False)
            return {}

    # The balancers are asked at the same moment, so one sample is one instant.
    with ThreadPoolExecutor(max_workers=len(run.admins)) as ask:
        while True:
            states = list(ask.map(state_of, run.admins.items()))
            samples.append(total_loads(states, pool))
            if time.monotonic() >= next_report:
                _push_report(run, pool, average_loads(samples), len(samples))
                samples, next_report = [], next_report + every
            if run._stop.wait(sample_every):
                return


def _push_report(run, pool: str, loads: dict[str, float], samples: int) -> None:
    for proxy, admin in run.admins.items():
        try:
            admin.call("PUT", f"/pools/{pool}/load", {"loads": loads})
        except AdminError as exc:
            run.mark("error", f"load report to {proxy} failed: {exc}", chart=False)
    run.mark("load", "load report (mean requests in flight over " + f"{samples} samples): "
             + ", ".join(f"{b} {n:g}" for b, n in loads.items()), label="load report",
             chart=False, loads=loads)
