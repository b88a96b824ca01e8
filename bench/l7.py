"""L7 throughput and latency: LBLab against nginx and HAProxy as HTTP reverse proxies.

In one run, wrk drives, one after another:

  origin   the origin nginx directly (what the client core can do with no proxy)
  lblab    `python -m proxy`: one pool of --backends origin ports, round_robin,
           admin API (events, metrics) on; with --with-subscriber one /events
           reader is connected for the whole measurement
  nginx    nginx proxy_pass to an upstream of the same ports, with keepalive
  haproxy  HAProxy in http mode, roundrobin over the same ports, one thread

Each proxy runs alone, pinned to --proxy-cpu; wrk, the origin and the reader
share --client-cpu. The table gives req/s, p50 and p99 latency, error counts
and each target's req/s as a ratio to nginx-as-proxy. Goal: LBLab >= 0.5x nginx.

    .venv/bin/python bench/l7.py -d 10 -c 50
    .venv/bin/python bench/l7.py -d 5 --with-subscriber --targets lblab,nginx
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

TARGETS = ("origin", "lblab", "nginx", "haproxy")
GOAL_RATIO = 0.5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    c.add_common_args(parser)
    parser.add_argument("--backends", type=int, default=4,
                        help="origin ports in the pool (default 4)")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--with-subscriber", action="store_true",
                        help="keep one /events reader connected while LBLab is measured")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every target this many times, interleaved; "
                             "the median round is reported (default 1)")
    parser.add_argument("--path", default="/", help="request path (default /)")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    return args


def run_target(target: str, procs: c.Processes, args, backends, opts) -> dict:
    """Start one target (pinned), measure it with wrk, stop it; return its record."""
    proxy_cpu, client_cpu = c.cpus(args)
    record: dict = {"target": target}
    port = backends[0][1] if target == "origin" else c.free_port()
    proc = None
    reader = None
    stats_path = None
    admin_port = None
    try:
        if target == "lblab":
            admin_port = c.free_port()
            config = c.lblab_config(port, admin_port, {"web": c.lblab_pool(backends)})
            proc = c.start_lblab(procs, "lblab", config, port, proxy_cpu)
            record["config"] = config
            if args.with_subscriber:
                stats_path = procs.path("lblab", f"reader-{c.free_port()}.json")
                reader = c.start_event_reader(procs, "event-reader", admin_port, stats_path,
                                              cpu=client_cpu)
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
    if "lblab" in args.targets and (why := c.lblab_runnable()):
        skipped["lblab"] = why
    rounds: dict[str, list[dict]] = {t: [] for t in args.targets if t not in skipped}
    busy_before = c.warn_if_busy(wait=args.wait_quiet)
    with c.Processes(keep=args.keep) as procs:
        ports = c.free_ports(args.backends)
        backends = [(c.LOCAL, p) for p in ports]
        c.start_origin(procs, ports, cpu=client_cpu)
        for n in range(args.rounds):
            for target in rounds:
                if args.rounds > 1:
                    print(f"round {n + 1}/{args.rounds}: {target} ...", file=sys.stderr)
                try:
                    rounds[target].append(run_target(target, procs, args, backends, opts))
                except c.BenchError as exc:
                    skipped[target] = str(exc)
                    print(f"{target}: FAILED\n{exc}", file=sys.stderr)
            rounds = {t: r for t, r in rounds.items() if t not in skipped}

    chosen = {t: _median_round(r) for t, r in rounds.items() if r}
    nginx_rps = chosen["nginx"]["result"].rps if "nginx" in chosen else None
    nginx_eff = (c.per_cpu_second(chosen["nginx"]["result"], PROC_NAME["nginx"])
                 if "nginx" in chosen else None)
    rows = []
    for target in args.targets:
        if target not in chosen:
            rows.append({"target": target, "rps": "skipped"})
            continue
        res = chosen[target]["result"]
        label = target + (" +subscriber" if target == "lblab" and args.with_subscriber else "")
        rows.append({
            "target": label,
            "rps": c.fmt_rps(res.rps),
            "p50": c.fmt_ms(res.p50_ms),
            "p99": c.fmt_ms(res.p99_ms),
            "errors": str(res.error_count),
            "cpu": _pct_cell(c.proxy_pct(res, PROC_NAME.get(target, ""))),
            "sys": _pct_cell(c.system_pct(res, PROC_NAME.get(target, ""))),
            "other": _pct_cell(c.other_load(res, c.cpus(args)[0], PROC_NAME.get(target, ""))),
            "ratio": f"{res.rps / nginx_rps:.2f}x" if nginx_rps else "-",
            "eff": c.fmt_rps(eff := c.per_cpu_second(res, PROC_NAME.get(target, ""))),
            "eff_ratio": f"{eff / nginx_eff:.2f}x" if eff and nginx_eff else "-",
        })
    print()
    print(c.table(rows, [("target", "target"), ("rps", "req/s"), ("p50", "p50 ms"),
                         ("p99", "p99 ms"), ("errors", "errors"), ("ratio", "vs nginx"),
                         ("cpu", "proxy CPU"), ("sys", "of it kernel"),
                         ("other", "other on its CPU"),
                         ("eff", "req/CPU-s"), ("eff_ratio", "vs nginx /CPU-s")]))
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
          f"(+{args.warmup:g}s warm-up) on CPU {client_cpu}; proxies on CPU "
          f"{c.cpus(args)[0]}; {args.backends} origin ports; rounds: {args.rounds}")
    verdict = None
    if "lblab" in chosen and nginx_rps:
        ratio = chosen["lblab"]["result"].rps / nginx_rps
        verdict = {"goal": f"lblab >= {GOAL_RATIO}x nginx", "ratio": round(ratio, 3),
                   "met": ratio >= GOAL_RATIO}
        eff = c.per_cpu_second(chosen["lblab"]["result"], "lblab")
        if eff and nginx_eff:
            verdict["ratio_per_cpu_second"] = round(eff / nginx_eff, 3)
        print(f"goal LBLab >= {GOAL_RATIO}x nginx: {ratio:.2f}x -> "
              f"{'met' if verdict['met'] else 'NOT met'}"
              + (f" (per CPU-second: {eff / nginx_eff:.2f}x)" if eff and nginx_eff else ""))
    sub = chosen.get("lblab", {}).get("subscriber")
    if sub:
        lag = sub["lag_ms"]
        print(f"subscriber: {sub['lines']:,} lines ({sub['request_lines']:,} request events), "
              f"dropped {sub['dropped']}, lag p50 {c.fmt_ms(lag['p50'])} ms, "
              f"p99 {c.fmt_ms(lag['p99'])} ms, max {c.fmt_ms(lag['max'])} ms")
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


PROC_NAME = {"lblab": "lblab", "nginx": "nginx-proxy", "haproxy": "haproxy"}


def _pct_cell(pct: float | None) -> str:
    return "-" if pct is None else f"{pct:.0f}%"


def _median_round(records: list[dict]) -> dict:
    ordered = sorted(records, key=lambda r: r["result"].rps)
    return ordered[len(ordered) // 2]


if __name__ == "__main__":
    sys.exit(main())
