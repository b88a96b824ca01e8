"""The throughput cost of active health checks in LBLab.

Two configs, alternated in one run, identical except for one `health:` block:

  off   pool `web` (--traffic origin ports, takes all of wrk's traffic) and pool
        `checked` (--checked origin ports, no traffic, no checks)
  on    the same, with HTTP health checks on every backend of `checked`
        (GET /health every --interval, default 100ms; with --check-traffic the
        traffic pool is checked too)

All backends are ports of one origin nginx on the client CPU (one `server`
block each: distinct host:port backends, as a checker sees them, for the cost
of one process). LBLab is pinned to the proxy CPU, restarted for each
measurement, and measured --rounds times per config (interleaved off/on); the
median round of each is compared. Goal: checks cost < 5% of throughput.

    .venv/bin/python bench/health.py -d 10 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

GOAL_COST_PCT = 5.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    c.add_common_args(parser)
    parser.add_argument("--traffic", type=int, default=4,
                        help="backends in the traffic pool (default 4)")
    parser.add_argument("--checked", type=int, default=50,
                        help="health-checked backends in the second pool (default 50)")
    parser.add_argument("--interval", default="100ms", help="health.interval (default 100ms)")
    parser.add_argument("--health-timeout", default="500ms",
                        help="health.timeout (default 500ms)")
    parser.add_argument("--check-traffic", action="store_true",
                        help="health-check the traffic pool as well")
    parser.add_argument("--idle-seconds", type=int, default=5,
                        help="also measure LBLab's CPU with no traffic for this long, checks "
                             "off and on (0 skips it; default 5)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements per config, interleaved (default 3)")
    return parser.parse_args(argv)


def health_block(args) -> dict:
    return {"type": "http", "path": "/health", "interval": args.interval,
            "timeout": args.health_timeout, "healthy_threshold": 2, "unhealthy_threshold": 3}


def make_config(args, variant: str, port: int, admin_port: int,
                traffic: list, checked: list) -> dict:
    checks = health_block(args) if variant == "on" else None
    pools = {
        "web": c.lblab_pool(traffic, prefix="t",
                            health=checks if args.check_traffic else None),
        "checked": c.lblab_pool(checked, prefix="h", health=checks),
    }
    return c.lblab_config(port, admin_port, pools, traffic_pool="web")


def health_view(admin_port: int) -> dict:
    """How many backends /state reports in each health state (shape-tolerant)."""
    counts: dict[str, int] = {}
    try:
        status, body = c.http_get(admin_port, "/state")
        state = json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return {}

    def walk(node):
        if isinstance(node, dict):
            if "health" in node and isinstance(node["health"], str) and "name" in node:
                counts[node["health"]] = counts.get(node["health"], 0) + 1
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(state)
    return counts


def probe_counts(delta: dict[str, float]) -> dict[str, float]:
    """Probes sent during the window, by result label (lblab_health_probes_total{...})."""
    return {k: v for k, v in delta.items() if k.startswith("lblab_health_probes_total")}


def idle_cpu(variant: str, procs: c.Processes, args, traffic, checked) -> float:
    """CPU % of a core LBLab uses with no traffic at all (so: the checks alone).

    A process's own CPU time hardly moves with other load on the machine, so
    this is the steadiest estimate of the checks' cost: at saturation the
    proxy loses about this share of its core to them.
    """
    proxy_cpu, _ = c.cpus(args)
    port, admin_port = c.free_port(), c.free_port()
    config = make_config(args, variant, port, admin_port, traffic, checked)
    proc = c.start_lblab(procs, f"lblab-idle-{variant}", config, port, proxy_cpu)
    try:
        time.sleep(2.0)  # past start-up and the first probe round
        meter = c.CpuMeter([proc])
        time.sleep(args.idle_seconds)
        return meter.stop()["process_pct"][proc.name]
    finally:
        procs.stop(proc)


def measure(variant: str, procs: c.Processes, args, traffic, checked, opts) -> dict:
    proxy_cpu, _ = c.cpus(args)
    port, admin_port = c.free_port(), c.free_port()
    config = make_config(args, variant, port, admin_port, traffic, checked)
    proc = c.start_lblab(procs, f"lblab-{variant}", config, port, proxy_cpu)
    try:
        status, body = c.http_get(port, "/")
        if status != 200:
            raise c.BenchError(f"LBLab answered {status} {body[:200]!r} before the load")
        before = c.metrics_snapshot(admin_port)
        result = c.run_wrk(f"http://{c.LOCAL}:{port}/", opts, procs.dir, watch=[proc])
        after = c.metrics_snapshot(admin_port)
        delta = {k: after[k] - before.get(k, 0.0) for k in after
                 if after[k] != before.get(k, 0.0)}
        return {"variant": variant, "config": config, "wrk": result.as_dict(),
                "result": result, "health_states": health_view(admin_port),
                "probes_during_load": probe_counts(delta)}
    finally:
        procs.stop(proc)


def main(argv=None) -> int:
    args = parse_args(argv)
    c.handle_sigterm()
    opts = c.wrk_options(args)
    _, client_cpu = c.cpus(args)
    print(c.header(f"Health checks: LBLab throughput with and without active checks on "
                   f"{args.checked} backends every {args.interval}"))
    if why := c.lblab_runnable():
        print(f"cannot run: {why}")
        return 1
    busy_before = c.warn_if_busy(wait=args.wait_quiet)
    records: dict[str, list[dict]] = {"off": [], "on": []}
    with c.Processes(keep=args.keep) as procs:
        ports = c.free_ports(args.traffic + args.checked)
        traffic = [(c.LOCAL, p) for p in ports[:args.traffic]]
        checked = [(c.LOCAL, p) for p in ports[args.traffic:]]
        c.start_origin(procs, ports, cpu=client_cpu)
        idle = {}
        if args.idle_seconds > 0:
            for variant in ("off", "on"):
                print(f"idle CPU, checks {variant} ...", file=sys.stderr)
                idle[variant] = idle_cpu(variant, procs, args, traffic, checked)
        for n in range(args.rounds):
            for variant in ("off", "on"):
                print(f"round {n + 1}/{args.rounds}: checks {variant} ...", file=sys.stderr)
                records[variant].append(measure(variant, procs, args, traffic, checked, opts))

    med = {v: c.median([r["result"].rps for r in rs]) for v, rs in records.items()}
    rep = {v: min(rs, key=lambda r: abs(r["result"].rps - med[v])) for v, rs in records.items()}
    cost = 100.0 * (med["off"] - med["on"]) / med["off"]
    # The same comparison per CPU-second of the proxy: robust to other load on the box.
    eff = {v: c.median([c.per_cpu_second(r["result"], f"lblab-{v}") or 0.0 for r in rs])
           for v, rs in records.items()}
    cost_cpu = 100.0 * (eff["off"] - eff["on"]) / eff["off"] if eff["off"] else None
    rows = []
    for v, label in (("off", "no health checks"),
                     ("on", f"{args.checked} backends every {args.interval}")):
        res = rep[v]["result"]
        rows.append({
            "variant": label,
            "rps": c.fmt_rps(med[v]),
            "rounds": " ".join(f"{r['result'].rps / 1000:.1f}k" for r in records[v]),
            "p50": c.fmt_ms(res.p50_ms), "p99": c.fmt_ms(res.p99_ms),
            "errors": str(sum(r["result"].error_count for r in records[v])),
            "cpu": f"{res.cpu.get('process_pct', {}).get(f'lblab-{v}', 0):.0f}%",
            "eff": c.fmt_rps(eff[v]),
            "sys": f"{c.system_pct(res, f'lblab-{v}') or 0:.0f}%",
            "other": _other(records[v], c.cpus(args)[0], v),
            "states": ", ".join(f"{k} {n}" for k, n in sorted(rep[v]["health_states"].items())),
        })
    print()
    print(c.table(rows, [("variant", "LBLab"), ("rps", "req/s (median)"),
                         ("rounds", "each round"), ("p50", "p50 ms"), ("p99", "p99 ms"),
                         ("errors", "errors"), ("cpu", "proxy CPU"), ("sys", "of it kernel"), ("eff", "req/CPU-s"),
                         ("other", "other on its CPU"),
                         ("states", "backend health after")]))
    print(f"\nthroughput cost of health checks: {cost:.1f}% "
          f"(goal < {GOAL_COST_PCT:g}%: {'met' if cost < GOAL_COST_PCT else 'NOT met'})"
          + (f"; per CPU-second of the proxy: {cost_cpu:.1f}%" if cost_cpu is not None else ""))
    if idle:
        print(f"with no traffic, LBLab uses {idle['off']:.1f}% of a core without checks and "
              f"{idle['on']:.1f}% with them ({args.idle_seconds}s each): the checks cost "
              f"about {idle['on'] - idle['off']:.1f}% of the core, the expected throughput "
              f"cost at saturation")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
          f"(+{args.warmup:g}s warm-up) on CPU {client_cpu}; LBLab on CPU {c.cpus(args)[0]}; "
          f"traffic pool {args.traffic} backends, checked pool {args.checked}; "
          f"health timeout {args.health_timeout}; rounds {args.rounds}")
    probes = rep["on"]["probes_during_load"]
    seconds = rep["on"]["result"].cpu.get("seconds") or args.duration
    if probes:
        total = sum(probes.values())
        by_result: dict[str, float] = {}
        for key, v in probes.items():
            m = re.search(r'result="([^"]*)"', key)
            by_result[m.group(1) if m else "?"] = by_result.get(m.group(1) if m else "?", 0) + v
        print(f"probes during the 'on' measurement: {total:,.0f} ({total / seconds:,.0f}/s; "
              + ", ".join(f"{r} {v:,.0f}" for r, v in sorted(by_result.items())) + ")")
    else:
        print("probes during the 'on' measurement: none counted in /metrics "
              "(lblab_health_probes_total) -- were checks running?")
    if not args.no_save:
        payload = {
            "args": vars(args),
            "rounds": {v: [{k: x for k, x in r.items() if k != "result"} for r in rs]
                       for v, rs in records.items()},
            "median_rps": med,
            "cost_pct": round(cost, 2),
            "idle_cpu_pct": idle,
            "median_rps_per_cpu_second": eff,
            "cost_pct_per_cpu_second": None if cost_cpu is None else round(cost_cpu, 2),
            "goal": f"cost < {GOAL_COST_PCT}%",
            "met": cost < GOAL_COST_PCT,
            "summary": rows,
            "core_busy_pct_before": busy_before,
        }
        print(f"results: {c.write_results('health', payload).relative_to(c.REPO)}")
    return 0


def _other(records: list[dict], cpu: int | None, variant: str) -> str:
    """Other load on the proxy's CPU in each round (disturbed rounds stand out)."""
    cells = []
    for r in records:
        other = c.other_load(r["result"], cpu, f"lblab-{variant}")
        cells.append("-" if other is None else f"{other:.0f}%")
    return " ".join(cells)


if __name__ == "__main__":
    sys.exit(main())
