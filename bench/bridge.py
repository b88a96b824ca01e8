"""What the site's bridge costs the proxy, and how far behind the page is.

Alternated in one run (LBLab restarted for each measurement, --rounds each):

  none    LBLab with no /events subscriber
  bridge  the real `python manage.py bridge --admin-url URL --sandbox bench`
          subscribed to LBLab's /events (and polling /state), sending its ticks
          through a private redis-server (REDIS_URL, channels_redis) to
          bench/tick_probe.py, which plays the page: for every decision in a
          tick, lag = tick arrival - decision ts
  reader  a plain NDJSON reader of /events (bench/event_reader.py): the stream's
          own cost and lag without any coalescing; used instead of `bridge`,
          and said so, when the bridge command does not exist

The bridge, redis, the probe and the reader run on the client CPU with wrk and
the origin, so what the table shows is the proxy's cost of serving a
subscriber. Goals: <= 5% throughput loss; the page <= ~1 s behind.

    .venv/bin/python bench/bridge.py -d 10 --rounds 3
    .venv/bin/python bench/bridge.py --variants none,reader,bridge
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

GOAL_LOSS_PCT = 5.0
GOAL_LAG_MS = 1000.0
SANDBOX = "bench"
VARIANTS = ("none", "reader", "bridge")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    c.add_common_args(parser)
    parser.add_argument("--backends", type=int, default=4,
                        help="origin ports in the pool (default 4)")
    parser.add_argument("--variants", default="none,bridge",
                        help=f"comma-separated subset of {','.join(VARIANTS)} "
                             "(default none,bridge)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements per variant, interleaved (default 3)")
    args = parser.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}")
    return args


def bridge_available() -> str | None:
    """None when `python manage.py bridge` exists, else why not."""
    if not (c.REPO / "manage.py").exists():
        return "manage.py does not exist yet"
    if not (c.REPO / "explainer" / "management" / "commands" / "bridge.py").exists():
        return "explainer/management/commands/bridge.py does not exist yet"
    done = subprocess.run([c.PYTHON, "manage.py", "help", "bridge"], cwd=c.REPO,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"`manage.py help bridge` failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None


def start_redis(procs: c.Processes, cpu: int | None) -> str:
    port = c.free_port()
    work = procs.path("redis")
    work.mkdir(parents=True, exist_ok=True)
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    procs.start("redis", [redis, "--bind", c.LOCAL, "--port", str(port), "--save", "",
                          "--appendonly", "no", "--dir", str(work), "--daemonize", "no"],
                cpu=cpu, ready_port=port)
    return f"redis://{c.LOCAL}:{port}/0"


def measure(variant: str, procs: c.Processes, args, backends, opts, redis_url) -> dict:
    proxy_cpu, client_cpu = c.cpus(args)
    port, admin_port = c.free_port(), c.free_port()
    config = c.lblab_config(port, admin_port, {"web": c.lblab_pool(backends)})
    lblab = c.start_lblab(procs, f"lblab-{variant}", config, port, proxy_cpu)
    helpers: list[tuple[c.Proc, Path | None]] = []
    record: dict = {"variant": variant}
    try:
        status, body = c.http_get(port, "/")
        if status != 200:
            raise c.BenchError(f"LBLab answered {status} {body[:200]!r} before the load")
        if variant == "reader":
            stats = procs.path(f"reader-{port}.json")
            reader = c.start_event_reader(procs, "event-reader", admin_port, stats,
                                          cpu=client_cpu)
            helpers.append((reader, stats))
        elif variant == "bridge":
            stats = procs.path(f"probe-{port}.json")
            probe = procs.start("tick-probe", [c.PYTHON, str(c.BENCH / "tick_probe.py"),
                                               "--redis", redis_url,
                                               "--group", f"sandbox.{SANDBOX}",
                                               "--stats", str(stats)],
                                cpu=client_cpu, ready_line="tick probe ready")
            helpers.append((probe, stats))
            bridge = procs.start("bridge", [c.PYTHON, "manage.py", "bridge", "--admin-url",
                                            f"http://{c.LOCAL}:{admin_port}",
                                            "--sandbox", SANDBOX],
                                 cpu=client_cpu, env={"REDIS_URL": redis_url}, timeout=30)
            helpers.insert(0, (bridge, None))
        if variant != "none":
            try:  # Django's start-up alone takes seconds on a busy machine
                c.wait_subscribers(admin_port, 1, timeout=60)
            except c.BenchError as exc:
                tails = "\n".join(f"--- {h.name}:\n{h.tail()}" for h, _ in helpers)
                raise c.BenchError(f"{exc}\n{tails}") from None
        result = c.run_wrk(f"http://{c.LOCAL}:{port}/", opts, procs.dir,
                           watch=[lblab] + [h for h, _ in helpers])
        record.update(config=config, wrk=result.as_dict(), result=result)
        for proc, stats in helpers:  # the bridge first, then whoever measured it
            if stats is None:
                if not proc.alive():
                    raise c.BenchError(f"the bridge died during the run:\n{proc.tail()}")
                procs.stop(proc)
                record["bridge_log_tail"] = proc.tail(15).splitlines()
            else:
                record["lag_probe"] = c.stop_and_read_json(procs, proc, stats)
        helpers = []
        return record
    finally:
        for proc, _ in helpers:
            procs.stop(proc)
        procs.stop(lblab)


def lag_of(record: dict) -> dict | None:
    probe = record.get("lag_probe")
    if not probe:
        return None
    lag = probe.get("lag_ms")
    return lag if isinstance(lag, dict) else None


def main(argv=None) -> int:
    args = parse_args(argv)
    c.handle_sigterm()
    opts = c.wrk_options(args)
    _, client_cpu = c.cpus(args)
    print(c.header("Bridge: LBLab throughput with and without the site's bridge subscribed"))
    if why := c.lblab_runnable():
        print(f"cannot run: {why}")
        return 1
    notes = []
    variants = list(args.variants)
    if "bridge" in variants and (why := bridge_available()):
        notes.append(f"the bridge command is not usable ({why}); measured a plain NDJSON "
                     "reader of /events in its place (variant 'reader')")
        variants = [v for v in variants if v != "bridge"]
        if "reader" not in variants:
            variants.append("reader")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    busy_before = c.warn_if_busy(wait=args.wait_quiet)
    records: dict[str, list[dict]] = {v: [] for v in variants}
    with c.Processes(keep=args.keep) as procs:
        ports = c.free_ports(args.backends)
        backends = [(c.LOCAL, p) for p in ports]
        c.start_origin(procs, ports, cpu=client_cpu)
        redis_url = start_redis(procs, client_cpu) if "bridge" in variants else None
        for n in range(args.rounds):
            for variant in variants:
                print(f"round {n + 1}/{args.rounds}: {variant} ...", file=sys.stderr)
                records[variant].append(measure(variant, procs, args, backends, opts,
                                                redis_url))

    med = {v: c.median([r["result"].rps for r in rs]) for v, rs in records.items()}
    rep = {v: min(rs, key=lambda r: abs(r["result"].rps - med[v])) for v, rs in records.items()}
    base = med.get("none")
    # The same comparison per CPU-second of the proxy: robust to other load on the box.
    eff = {v: c.median([c.per_cpu_second(r["result"], f"lblab-{v}") or 0.0 for r in rs])
           for v, rs in records.items()}
    base_eff = eff.get("none")
    labels = {"none": "no subscriber", "reader": "plain /events reader",
              "bridge": "manage.py bridge"}
    rows = []
    verdicts = {}
    for v in variants:
        res = rep[v]["result"]
        loss = 100.0 * (base - med[v]) / base if base and v != "none" else None
        loss_cpu = (100.0 * (base_eff - eff[v]) / base_eff
                    if base_eff and v != "none" else None)
        # Lag over all rounds: each round's own percentiles; report the worst round.
        lags = [lag_of(r) for r in records[v] if lag_of(r)]
        worst = max(lags, key=lambda x: x.get("p99") or 0) if lags else None
        cpu = res.cpu.get("process_pct", {})
        rows.append({
            "variant": labels[v],
            "rps": c.fmt_rps(med[v]),
            "rounds": " ".join(f"{r['result'].rps / 1000:.1f}k" for r in records[v]),
            "loss": "-" if loss is None else f"{loss:.1f}%",
            "eff": c.fmt_rps(eff[v]),
            "sys": f"{c.system_pct(res, f'lblab-{v}') or 0:.0f}%",
            "other": _other(records[v], c.cpus(args)[0], v),
            "loss_cpu": "-" if loss_cpu is None else f"{loss_cpu:.1f}%",
            "p99": c.fmt_ms(res.p99_ms),
            "cpu": f"{cpu.get(f'lblab-{v}', 0):.0f}%",
            "sub_cpu": next((f"{pct:.0f}%" for name, pct in cpu.items()
                             if name in ("bridge", "event-reader")), "-"),
            "lag50": c.fmt_ms(worst["p50"]) if worst else "-",
            "lag99": c.fmt_ms(worst["p99"]) if worst else "-",
            "lagmax": c.fmt_ms(worst["max"]) if worst else "-",
        })
        if loss is not None:
            verdicts[v] = {"loss_pct": round(loss, 2), "loss_met": loss <= GOAL_LOSS_PCT,
                           "loss_pct_per_cpu_second": round(loss_cpu, 2),
                           "lag_p99_ms": worst["p99"] if worst else None,
                           "lag_met": bool(worst) and (worst["p99"] or 0) <= GOAL_LAG_MS}
    print()
    print(c.table(rows, [("variant", "LBLab with"), ("rps", "req/s (median)"),
                         ("rounds", "each round"), ("loss", "loss"), ("p99", "p99 ms"),
                         ("cpu", "proxy CPU"), ("sys", "of it kernel"), ("eff", "req/CPU-s"),
                         ("loss_cpu", "loss /CPU-s"), ("other", "other on its CPU"),
                         ("sub_cpu", "subscriber CPU"),
                         ("lag50", "lag p50 ms"), ("lag99", "lag p99 ms"),
                         ("lagmax", "lag max ms")]))
    print()
    for v, verdict in verdicts.items():
        print(f"{labels[v]}: throughput loss {verdict['loss_pct']:.1f}% (goal <= "
              f"{GOAL_LOSS_PCT:g}%: {'met' if verdict['loss_met'] else 'NOT met'}; "
              f"per CPU-second {verdict['loss_pct_per_cpu_second']:.1f}%); "
              f"lag p99 {c.fmt_ms(verdict['lag_p99_ms'])} ms (goal <= {GOAL_LAG_MS:g} ms: "
              f"{'met' if verdict['lag_met'] else 'NOT met'})")
    if "bridge" in variants:
        probe = rep["bridge"].get("lag_probe", {})
        print(f"bridge lag = tick arrival at a channels_redis group member - decision ts; "
              f"ticks received {probe.get('ticks')}, decisions carried "
              f"{probe.get('decisions')}, not forwarded by design "
              f"{probe.get('decisions_dropped')}")
    if "reader" in variants:
        print("reader lag = line arrival - event ts (first and last line of every chunk)")
    for note in notes:
        print(f"note: {note}")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
          f"(+{args.warmup:g}s warm-up) on CPU {client_cpu}; LBLab on CPU {c.cpus(args)[0]}; "
          f"{args.backends} origin ports; rounds {args.rounds}")
    if not args.no_save:
        payload = {
            "args": vars(args),
            "variants": variants,
            "rounds": {v: [{k: x for k, x in r.items() if k != "result"} for r in rs]
                       for v, rs in records.items()},
            "median_rps": med,
            "median_rps_per_cpu_second": eff,
            "verdicts": verdicts,
            "notes": notes,
            "summary": rows,
            "core_busy_pct_before": busy_before,
        }
        print(f"results: {c.write_results('bridge', payload).relative_to(c.REPO)}")
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
