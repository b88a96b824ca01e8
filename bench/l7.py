"""L7 throughput and latency: LBLab against nginx and HAProxy as HTTP reverse proxies.

In one run, wrk drives, one after another:

  origin   the origin nginx directly (what the client core can do with no proxy)
  lblab    `python -m proxy`: one pool of --backends origin ports, round_robin,
           every teaching feature on (a request event per request with its
           candidates and why, metrics, active health checks every
           --health-interval; access log off), no subscriber; with
           --with-subscriber one reader of the full /events stream is connected
  lblab-zero  the same proxy with request events sampled to zero
           (LBLAB_REQUEST_EVENTS=0: none built, stored or counted): what the
           teaching features cost is lblab against this (goal <= 10 %)
  lblab-dash  lblab with one dashboard subscribed as the site's bridge is
           (/events?requests=sample&max_per_s=200&interval_ms=250): what a
           watching page costs on top (goal <= 5 %)
  nginx    nginx proxy_pass to an upstream of the same ports, with keepalive
  haproxy  HAProxy in http mode, roundrobin over the same ports, one thread

--baseline REV adds, for each lblab target, the same target run from the proxy
package at git revision REV (`lblab@base`, `lblab-zero@base`...), interleaved
with it in every round: a before/after whose two sides meet the same moments
of a noisy machine.

Each proxy runs alone, pinned to --proxy-cpu; wrk, the origin and the reader
share --client-cpu. The table gives req/s, p50 and p99 latency, error counts
and each target's req/s as a ratio to nginx-as-proxy, per CPU-second of the
proxy too, and the latency each proxy adds (its p50/p99 minus the origin's,
measured directly in the same round). Goal: LBLab >= 0.3x nginx per CPU-second.

    .venv/bin/python bench/l7.py -d 10 -c 50
    .venv/bin/python bench/l7.py -d 8 --rounds 3 --targets origin,lblab-zero,lblab,lblab-dash,nginx
    .venv/bin/python bench/l7.py -d 5 --with-subscriber --targets lblab,nginx
    .venv/bin/python bench/l7.py -d 6 --rounds 5 --targets lblab-zero,lblab --baseline HEAD~1
    .venv/bin/python bench/l7.py -d 5 --rounds 3 --response-kb 256 --targets lblab,nginx,haproxy
    .venv/bin/python bench/l7.py -d 5 --rounds 5 --close --targets lblab,nginx,haproxy --baseline HEAD~1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

TARGETS = ("origin", "lblab-zero", "lblab", "lblab-dash", "nginx", "haproxy")
DEFAULT_TARGETS = ("origin", "lblab", "nginx", "haproxy")
GOAL_RATIO = 0.3  # per CPU-second (issue 16)
TEACHING_GOAL = 0.10  # lblab against lblab-zero, per CPU-second
DASHBOARD_GOAL = 0.05  # lblab-dash against lblab, per CPU-second
DASHBOARD_QUERY = "requests=sample&max_per_s=200&interval_ms=250"  # explainer/bridge.py
BASE = "@base"  # suffix of a target run from the proxy at --baseline REV


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    c.add_common_args(parser)
    parser.add_argument("--backends", type=int, default=4,
                        help="origin ports in the pool (default 4)")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--with-subscriber", action="store_true",
                        help="keep one /events reader connected while LBLab is measured")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every target this many times, interleaved; "
                             "the median round is reported (default 1)")
    parser.add_argument("--path", default="/", help="request path (default /)")
    parser.add_argument("--response-kb", type=int, default=0, metavar="N",
                        help="the origin answers N KiB (path /big) instead of 2 bytes: "
                             "the relay of large bodies (default 0)")
    parser.add_argument("--close", action="store_true",
                        help="wrk sends Connection: close: a new client connection per "
                             "request (connection churn on the client side; backends stay "
                             "keep-alive)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run each lblab target from the proxy at this git revision "
                             "(target@base), interleaved")
    parser.add_argument("--health-interval", default="1s",
                        help="active health checks of LBLab's pool (default 1s; 'off' for none)")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    if args.response_kb:
        args.path = "/big"
    if args.baseline:
        args.targets = [name for t in args.targets
                        for name in ((t, t + BASE) if t.startswith("lblab") else (t,))]
    return args


def run_target(target: str, procs: c.Processes, args, backends, opts,
               base_tree: Path | None = None) -> dict:
    """Start one target (pinned), measure it with wrk, stop it; return its record."""
    proxy_cpu, client_cpu = c.cpus(args)
    record: dict = {"target": target}
    at_base = target.endswith(BASE)
    target = target.removesuffix(BASE)
    port = backends[0][1] if target == "origin" else c.free_port()
    proc = None
    reader = None
    stats_path = None
    admin_port = None
    try:
        if target.startswith("lblab"):
            admin_port = c.free_port()
            health = None
            if args.health_interval != "off":
                health = {"type": "http", "path": "/health", "interval": args.health_interval,
                          "timeout": "500ms"}
            config = c.lblab_config(port, admin_port,
                                    {"web": c.lblab_pool(backends, health=health)})
            env = {"LBLAB_REQUEST_EVENTS": "0"} if target == "lblab-zero" else None
            if at_base:
                proc = c.start_lblab_at(procs, "lblab", config, port, proxy_cpu, base_tree,
                                        env=env)
                record["revision"] = args.baseline
            else:
                proc = c.start_lblab(procs, "lblab", config, port, proxy_cpu, env=env)
            record["config"] = config
            query = None
            if target == "lblab-dash":
                query = DASHBOARD_QUERY
            elif target == "lblab" and args.with_subscriber:
                query = ""
            if query is not None:
                stats_path = procs.path("lblab", f"reader-{c.free_port()}.json")
                reader = c.start_event_reader(procs, "event-reader", admin_port, stats_path,
                                              cpu=client_cpu, query=query)
                c.wait_subscribers(admin_port)
            if health:
                _wait_up(admin_port, len(backends))
        elif target == "nginx":
            text = c.nginx_proxy_config(procs.path("nginx-proxy"), port, backends)
            proc = c.start_nginx(procs, "nginx-proxy", text, [port], proxy_cpu)
            record["config"] = text
        elif target == "haproxy":
            text = c.haproxy_config(procs.path("haproxy"), port, backends, mode="http")
            proc = c.start_haproxy(procs, "haproxy", text, port, proxy_cpu)
            record["config"] = text
        status, body = c.http_get(port, args.path)
        if status != 200:
            raise c.BenchError(f"{target}: GET {args.path} answered {status} {body[:200]!r}")
        before = c.metrics_snapshot(admin_port) if admin_port else {}
        result = c.run_wrk(f"http://{c.LOCAL}:{port}{args.path}", opts, procs.dir,
                           headers=["Connection: close"] if args.close else (),
                           watch=[p for p in (proc, reader) if p is not None])
        record["wrk"] = result.as_dict()
        record["result"] = result
        if admin_port:
            after = c.metrics_snapshot(admin_port)
            record["metrics_available"] = bool(after)
            record["metrics_delta"] = {k: after[k] - before.get(k, 0.0) for k in after
                                       if "request" in k and after[k] != before.get(k, 0.0)}
        if reader is not None:
            record["subscriber"] = c.stop_and_read_json(procs, reader, stats_path)
            reader = None
    finally:
        if reader is not None:
            procs.stop(reader)
        if proc is not None:
            procs.stop(proc)
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    c.handle_sigterm()
    opts = c.wrk_options(args)
    _, client_cpu = c.cpus(args)
    print(c.header("L7 reverse proxy: LBLab vs nginx vs HAProxy (one core each)"))
    skipped: dict[str, str] = {}
    for target in args.targets:
        if target.startswith("lblab") and (why := c.lblab_runnable()):
            skipped[target] = why
    rounds: dict[str, list[dict]] = {t: [] for t in args.targets if t not in skipped}
    busy_before = c.warn_if_busy(wait=args.wait_quiet)
    with c.Processes(keep=args.keep) as procs:
        ports = c.free_ports(args.backends)
        backends = [(c.LOCAL, p) for p in ports]
        c.start_origin(procs, ports, cpu=client_cpu, big_kb=args.response_kb)
        base_tree = (c.export_revision(args.baseline, procs.path("base"))
                     if args.baseline else None)
        for n in range(args.rounds):
            for target in rounds:
                if args.rounds > 1:
                    print(f"round {n + 1}/{args.rounds}: {target} ...", file=sys.stderr)
                try:
                    rounds[target].append(run_target(target, procs, args, backends, opts,
                                                     base_tree))
                except c.BenchError as exc:
                    skipped[target] = str(exc)
                    print(f"{target}: FAILED\n{exc}", file=sys.stderr)
            rounds = {t: r for t, r in rounds.items() if t not in skipped}

    chosen = {t: _median_round(r) for t, r in rounds.items() if r}
    nginx_rps = chosen["nginx"]["result"].rps if "nginx" in chosen else None
    nginx_eff = (c.per_cpu_second(chosen["nginx"]["result"], PROC_NAME["nginx"])
                 if "nginx" in chosen else None)
    origin = chosen.get("origin", {}).get("result")
    rows = []
    for target in args.targets:
        if target not in chosen:
            rows.append({"target": target, "rps": "skipped"})
            continue
        res = chosen[target]["result"]
        proc_name = PROC_NAME.get(target.removesuffix(BASE), "")
        label = target + (" +subscriber" if target == "lblab" and args.with_subscriber else "")
        added = _added_latency(res, origin) if target != "origin" else None
        rows.append({
            "target": label,
            "rps": c.fmt_rps(res.rps),
            "p50": c.fmt_ms(res.p50_ms),
            "p99": c.fmt_ms(res.p99_ms),
            "errors": str(res.error_count),
            "cpu": _pct_cell(c.proxy_pct(res, proc_name)),
            "sys": _pct_cell(c.system_pct(res, proc_name)),
            "other": _pct_cell(c.other_load(res, c.cpus(args)[0], proc_name)),
            "ratio": f"{res.rps / nginx_rps:.2f}x" if nginx_rps else "-",
            "eff": c.fmt_rps(eff := c.per_cpu_second(res, proc_name)),
            "eff_ratio": f"{eff / nginx_eff:.2f}x" if eff and nginx_eff else "-",
            "added": f"{c.fmt_ms(added[0])} / {c.fmt_ms(added[1])}" if added else "-",
            "each": " ".join(_short(_eff(r, target)) for r in rounds[target]),
        })
    print()
    print(c.table(rows, [("target", "target"), ("rps", "req/s"), ("p50", "p50 ms"),
                         ("p99", "p99 ms"), ("errors", "errors"), ("ratio", "vs nginx"),
                         ("cpu", "proxy CPU"), ("sys", "of it kernel"),
                         ("other", "other on its CPU"),
                         ("eff", "req/CPU-s"), ("eff_ratio", "vs nginx /CPU-s"),
                         ("added", "added p50/p99 ms"), ("each", "req/CPU-s each round")]))
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
          f"(+{args.warmup:g}s warm-up) on CPU {client_cpu}; proxies on CPU "
          f"{c.cpus(args)[0]}; {args.backends} origin ports; rounds: {args.rounds}"
          + ("; Connection: close (a new client connection per request)" if args.close else ""))
    verdict = None
    if "lblab" in chosen and nginx_rps:
        ratio = chosen["lblab"]["result"].rps / nginx_rps
        eff = c.per_cpu_second(chosen["lblab"]["result"], "lblab")
        per_cpu = eff / nginx_eff if eff and nginx_eff else None
        verdict = {"goal": f"lblab >= {GOAL_RATIO}x nginx per CPU-second",
                   "ratio": round(ratio, 3),
                   "met": per_cpu is not None and per_cpu >= GOAL_RATIO}
        if per_cpu is not None:
            verdict["ratio_per_cpu_second"] = round(per_cpu, 3)
        print(f"goal LBLab >= {GOAL_RATIO}x nginx per CPU-second: "
              + (f"{per_cpu:.2f}x" if per_cpu is not None else "?")
              + f" -> {'met' if verdict['met'] else 'NOT met'} (raw req/s: {ratio:.2f}x)")
    costs = _feature_costs(rounds)
    for line in costs.pop("lines", []):
        print(line)
    if verdict is not None:
        verdict.update(costs)
    if "nginx" in chosen and origin is not None:
        for target in ("lblab", "nginx", "haproxy"):
            if target in chosen and (added := _added_latency(chosen[target]["result"], origin)):
                print(f"{target} adds p50 {c.fmt_ms(added[0])} ms, p99 {c.fmt_ms(added[1])} ms "
                      "to the origin's latency (closed loop: latency follows throughput)")
    for target in ("lblab", "lblab-dash"):
        sub = chosen.get(target, {}).get("subscriber")
        if sub:
            lag = sub["lag_ms"]
            print(f"{target} subscriber: {sub['lines']:,} lines ({sub['request_lines']:,} "
                  f"request events), dropped {sub['dropped']}, lag p50 "
                  f"{c.fmt_ms(lag['p50'])} ms, p99 {c.fmt_ms(lag['p99'])} ms, "
                  f"max {c.fmt_ms(lag['max'])} ms")
    for target, why in skipped.items():
        print(f"skipped {target}: {why.splitlines()[0]}")

    if not args.no_save:
        payload = {
            "args": {k: v for k, v in vars(args).items()},
            "targets": {t: [{k: v for k, v in r.items() if k != "result"} for r in rs]
                        for t, rs in rounds.items()},
            "summary": rows,
            "verdict": verdict,
            "skipped": skipped,
            "core_busy_pct_before": busy_before,
        }
        print(f"results: {c.write_results('l7', payload).relative_to(c.REPO)}")
    return 0 if chosen else 1


def _wait_up(admin_port: int, count: int, timeout: float = 20.0) -> None:
    """Wait until the health checks made every backend of the pool eligible."""
    deadline = time.monotonic() + timeout
    up = 0.0
    while time.monotonic() < deadline:
        metrics = c.metrics_snapshot(admin_port)
        up = sum(v for k, v in metrics.items() if k.startswith("lblab_backend_up{"))
        if up >= count:
            return
        time.sleep(0.1)
    raise c.BenchError(f"only {up:g} of {count} backends up after {timeout:.0f}s of checks")


def _eff(record: dict, target: str) -> float | None:
    return c.per_cpu_second(record["result"], PROC_NAME.get(target.removesuffix(BASE), ""))


def _short(value: float | None) -> str:
    return "-" if not value else f"{value / 1000:.1f}k"


def _added_latency(res, origin) -> tuple[float, float] | None:
    """The proxy's p50 and p99 minus the origin's (wrk straight at it), in ms."""
    if origin is None or None in (res.p50_ms, res.p99_ms, origin.p50_ms, origin.p99_ms):
        return None
    return res.p50_ms - origin.p50_ms, res.p99_ms - origin.p99_ms


def _feature_costs(rounds: dict[str, list[dict]]) -> dict:
    """Per CPU-second (median of the rounds): teaching features against events sampled
    to zero, and a subscribed dashboard on top of them."""
    med = {t: c.median([e for r in rs if (e := _eff(r, t))] or [0.0])
           for t, rs in rounds.items() if t.startswith("lblab")}
    out: dict = {"lines": []}
    for suffix in ("", BASE):
        for name, base, variant, goal in (
                ("teaching_features_cost", "lblab-zero", "lblab", TEACHING_GOAL),
                ("dashboard_cost", "lblab", "lblab-dash", DASHBOARD_GOAL)):
            base, variant = base + suffix, variant + suffix
            if not med.get(base) or not med.get(variant):
                continue
            cost = (med[base] - med[variant]) / med[base]
            out[name + suffix.replace("@", "_")] = round(cost, 4)
            out["lines"].append(
                f"{variant} against {base}, per CPU-second (median of rounds): "
                f"{med[variant]:,.0f} vs {med[base]:,.0f} req/CPU-s, cost {cost:.1%} "
                f"(goal <= {goal:.0%}: {'met' if cost <= goal else 'NOT met'})")
    for target in [t for t in med if not t.endswith(BASE)]:
        if med.get(target) and med.get(target + BASE):
            change = med[target] / med[target + BASE] - 1
            out["lines"].append(
                f"{target} against {target}{BASE}, per CPU-second (median of rounds): "
                f"{med[target]:,.0f} vs {med[target + BASE]:,.0f} req/CPU-s ({change:+.1%})")
    return out


PROC_NAME = {"lblab": "lblab", "lblab-zero": "lblab", "lblab-dash": "lblab",
             "nginx": "nginx-proxy", "haproxy": "haproxy"}


def _pct_cell(pct: float | None) -> str:
    return "-" if pct is None else f"{pct:.0f}%"


def _median_round(records: list[dict]) -> dict:
    ordered = sorted(records, key=lambda r: r["result"].rps)
    return ordered[len(ordered) // 2]


if __name__ == "__main__":
    sys.exit(main())
