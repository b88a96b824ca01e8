"""L4 (TCP) relay throughput: LBLab's tcp listener against HAProxy in TCP mode.

In one run, wrk drives, one after another, through each L4 proxy to the same origin:

  origin        the origin nginx directly (what the client core can do with no proxy)
  lblab         `python -m proxy`, a tcp listener, round_robin over --backends ports
  haproxy       HAProxy `mode tcp`, roundrobin over the same ports, one thread
  nginx-stream  nginx's stream module (when this system has it), the same upstreams

Three workloads (--workloads): "small" (GET / answered "ok": many tiny messages on
keep-alive connections, the per-read cost of the relay), "bulk" (GET /big, a
--bulk-kb response: bytes per second through the relay) and "churn" (GET / with
`Connection: close`: a new client connection per request, so a new backend
connection too: accept, pick, connect, relay one exchange, close, one connection
event; what an L4 proxy pays per connection). An L4 proxy never parses HTTP: wrk's
keep-alive connections are each one pick, and every request on them is relayed as
bytes; under churn every request is a connection.

--baseline REV adds the target "lblab-base": the proxy package as it is at git
revision REV (`git archive`, run from a temp dir), measured in the same rounds,
interleaved with the working tree's: a before/after comparison that other load on
a shared machine hits alike.

Each proxy runs alone, pinned to --proxy-cpu; wrk and the origin share --client-cpu.
The table gives req/s, MB/s, p50/p99, errors, the proxy's CPU and each target's
ratio to HAProxy, both raw and per CPU-second of the proxy. Goal: LBLab >= 0.9x HAProxy.

    .venv/bin/python bench/l4.py -d 10 -c 50
    .venv/bin/python bench/l4.py -d 5 --workloads bulk --bulk-kb 1024 --rounds 3
    .venv/bin/python bench/l4.py -d 8 --rounds 3 --workloads churn --baseline main
    .venv/bin/python bench/l4.py -d 8 --workloads churn --targets lblab --baseline main --profile

--profile runs LBLab (and lblab-base) under cProfile during the measured run only
(bench/profile_proxy.py) and prints, per target, the Python function calls per request
and the top functions by own time: the profile before and after a change, side by side.
The profiler slows Python down, so such a run's req/s and ratios are not results.

--syscalls attaches `strace -c -f` to every proxy during the measured run and prints,
per target, the system calls per request (per connection, under churn): where a
proxy's kernel time comes from, LBLab's uvloop beside HAProxy's own loop. strace
stops each proxy at every call, so such a run's req/s are not results either.

    .venv/bin/python bench/l4.py -d 3 -c 20 --workloads churn --targets lblab,haproxy --syscalls
"""
from __future__ import annotations

import argparse
import io
import pstats
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

TARGETS = ("origin", "lblab", "haproxy", "nginx-stream")
BASE = "lblab-base"  # the proxy at --baseline REV (a target only with that option)
WORKLOADS = ("small", "bulk", "churn")
GOAL_RATIO = 0.9
PROC_NAME = {"lblab": "lblab", BASE: BASE, "haproxy": "haproxy",
             "nginx-stream": "nginx-stream", "origin": "origin"}
# What wrk sends per workload: the path, and extra request headers.
CLOSE = "Connection: close"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    c.add_common_args(parser)
    parser.add_argument("--backends", type=int, default=4, help="origin ports (default 4)")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="small (tiny responses), bulk (large responses), churn (a new "
                             "connection per request)")
    parser.add_argument("--bulk-kb", type=int, default=256,
                        help="response size of the bulk workload in KiB (default 256)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every target this many times, interleaved; the median "
                             "round is reported (default 1)")
    parser.add_argument("--baseline", metavar="REV",
                        help=f"also measure the proxy at git revision REV as target {BASE!r}, "
                             "interleaved with the working tree's (before/after in one run)")
    parser.add_argument("--profile", action="store_true",
                        help="run LBLab under cProfile during each measured run and print "
                             "its calls per request and top functions (not a benchmark)")
    parser.add_argument("--syscalls", action="store_true",
                        help="count every proxy's system calls (strace -c) during each "
                             "measured run and print them per request (not a benchmark)")
    parser.add_argument("--top", type=int, default=20, help="rows per profile (default 20)")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if BASE in args.targets and not args.baseline:
        parser.error(f"target {BASE} needs --baseline REV (the git revision to compare with)")
    for given, known, what in ((args.targets, TARGETS + (BASE,), "target"),
                               (args.workloads, WORKLOADS, "workload")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.syscalls and args.profile:
        parser.error("--syscalls and --profile each slow the proxy down in their own way: "
                     "give one of them per run")
    if args.syscalls and shutil.which("strace") is None:
        parser.error("--syscalls needs strace on PATH (Debian: apt-get install -y strace)")
    if args.baseline and BASE not in args.targets:
        at = args.targets.index("lblab") + 1 if "lblab" in args.targets else len(args.targets)
        args.targets.insert(at, BASE)
    return args


def wrk_request(workload: str) -> tuple[str, list[str]]:
    """(path, extra headers) wrk sends in `workload`."""
    if workload == "bulk":
        return "/big", []
    if workload == "churn":
        return "/", [CLOSE]
    return "/", []


# ---------------------------------------------------------------- configs

def origin_config(work: Path, ports, bulk_file: Path) -> str:
    """One nginx: "ok" on every path, and /big from a file (sendfile), on every port."""
    servers = "\n".join(f"""    server {{
        listen {c.LOCAL}:{port} reuseport backlog=4096;
        location = /big {{ default_type application/octet-stream; alias {bulk_file}; }}
        location / {{ default_type text/plain; return 200 "ok"; }}
    }}""" for port in ports)
    return (c._nginx_main(work, events=max(4096, 64 * len(ports)))
            + "http {\n" + c._nginx_http_common(work) + "    sendfile on;\n" + servers + "\n}\n")


def nginx_stream_config(work: Path, port: int, backends) -> str:
    text = c.nginx_proxy_config(work, port, backends, mode="stream")
    return f"load_module {STREAM_MODULE};\n" + text


def lblab_tcp_config(port: int, admin_port: int, backends) -> dict:
    return c.lblab_config(port, admin_port, {"origin": c.lblab_pool(backends)}, protocol="tcp")


# ---------------------------------------------------------------- one measurement

def read_profile(proc: c.Proc, path: Path, requests: int, top: int) -> dict:
    """Wait for the profiler's stats; calls per request and the top functions by own time."""
    deadline = time.monotonic() + 30
    while not path.exists() or "profile written" not in proc.output():
        if time.monotonic() > deadline:
            raise c.BenchError(f"the profiler wrote nothing\n{proc.tail()}")
        time.sleep(0.1)
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    start = text.find("   ncalls")
    return {"python_seconds": round(stats.total_tt, 3), "calls": stats.total_calls,
            "calls_per_request": round(stats.total_calls / requests, 1) if requests else None,
            "python_us_per_request": round(1e6 * stats.total_tt / requests, 1)
            if requests else None,
            "top": text[start:].rstrip().splitlines() if start >= 0 else []}


class SyscallCounter:
    """`strace -c -f` attached to a running proxy between start() and stop()."""

    def __init__(self, pid: int, out: Path):
        self.pid, self.out = pid, out
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["strace", "-c", "-f", "-o", str(self.out),
                                      "-p", str(self.pid)], stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # attached to every thread before the run starts

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # detach: strace writes its summary
            self.proc.wait(timeout=30)

    def counts(self) -> dict[str, int]:
        return parse_strace_summary(self.out.read_text() if self.out.exists() else "")


def parse_strace_summary(text: str) -> dict[str, int]:
    """{system call: calls} from `strace -c`'s table (errors counted among the calls)."""
    counts = {}
    for line in text.splitlines():
        cells = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(cells) in (5, 6) and cells[3].isdigit() and cells[-1] != "total":
            counts[cells[-1]] = int(cells[3])
    return counts


def per_request(counts: dict[str, int], requests: int) -> dict[str, float]:
    """Calls per request, most frequent first, with the total under "total"."""
    if not requests:
        return {}
    rows = {name: round(n / requests, 2) for name, n in
            sorted(counts.items(), key=lambda kv: -kv[1])}
    return {"total": round(sum(counts.values()) / requests, 2), **rows}


def run_target(target: str, workload: str, procs: c.Processes, args, backends, opts,
               base_tree: Path | None = None) -> dict:
    proxy_cpu, _ = c.cpus(args)
    record: dict = {"target": target, "workload": workload}
    port = backends[0][1] if target == "origin" else c.free_port()
    proc = None
    profile = procs.path(target, f"{workload}.pstats") if args.profile and target in (
        "lblab", BASE) else None
    try:
        if target == "lblab":
            config = lblab_tcp_config(port, c.free_port(), backends)
            proc = c.start_lblab(procs, "lblab", config, port, proxy_cpu, profile_out=profile)
            record["config"] = config
        elif target == BASE:
            config = lblab_tcp_config(port, c.free_port(), backends)
            proc = c.start_lblab_at(procs, BASE, config, port, proxy_cpu, base_tree, profile)
            record["config"] = config
            record["revision"] = args.baseline
        elif target == "haproxy":
            text = c.haproxy_config(procs.path("haproxy"), port, backends, mode="tcp")
            proc = c.start_haproxy(procs, "haproxy", text, port, proxy_cpu)
            record["config"] = text
        elif target == "nginx-stream":
            text = nginx_stream_config(procs.path("nginx-stream"), port, backends)
            proc = c.start_nginx(procs, "nginx-stream", text, [port], proxy_cpu)
            record["config"] = text
        path, headers = wrk_request(workload)
        status, body = c.http_get(port, path)
        want = args.bulk_kb * 1024 if workload == "bulk" else 2
        if status != 200 or len(body) != want:
            raise c.BenchError(f"{target}: GET {path} answered {status} with {len(body)} bytes")
        watch = [p for p in (proc,) if p is not None]
        hooks = {}
        if profile is not None:
            hooks = {"on_start": lambda: proc.signal(signal.SIGUSR1),
                     "on_end": lambda: proc.signal(signal.SIGUSR2)}
        tracer = None
        if args.syscalls and proc is not None:
            tracer = SyscallCounter(proc.pid, procs.path(target, f"{workload}.strace"))
            hooks = {"on_start": tracer.start, "on_end": tracer.stop}
        result = c.run_wrk(f"http://{c.LOCAL}:{port}{path}", opts, procs.dir, headers=headers,
                           watch=watch, **hooks)
        record["wrk"] = result.as_dict()
        record["result"] = result
        if profile is not None:
            record["profile"] = read_profile(proc, profile, result.requests, args.top)
        if tracer is not None:
            record["syscalls"] = per_request(tracer.counts(), result.requests)
    finally:
        if proc is not None:
            procs.stop(proc)
    return record


def _eff(record: dict) -> float | None:
    """Requests per CPU-second of the proxy in one round (None for the origin)."""
    target = record["target"]
    return None if target == "origin" else c.per_cpu_second(record["result"], PROC_NAME[target])


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarise(rounds: dict, targets, workloads, skipped=()) -> tuple[list[dict], dict]:
    """Table rows (the median round of each target, every round listed) and verdicts.

    `rounds` maps (workload, target) to its records in round order. Verdicts per
    workload: LBLab against HAProxy (median rounds, raw and per CPU-second), and
    with a baseline, LBLab against lblab-base per CPU-second: the median of the
    per-round ratios (round n of one against round n of the other, run minutes apart).
    """
    chosen = {k: _median_round(r) for k, r in rounds.items() if r and k[1] not in skipped}
    rows, verdicts = [], {}
    for workload in workloads:
        ref = chosen.get((workload, "haproxy"))
        ref_rps = ref["result"].rps if ref else None
        ref_eff = _eff(ref) if ref else None
        for target in targets:
            rec = chosen.get((workload, target))
            if rec is None:
                rows.append({"workload": workload, "target": target, "rps": "skipped"})
                continue
            res = rec["result"]
            eff = _eff(rec)
            each = [_eff(r) for r in rounds[(workload, target)]]
            rows.append({
                "workload": workload, "target": target,
                "rps": c.fmt_rps(res.rps),
                "mbs": f"{res.transfer_bytes_per_s / 1e6:,.1f}",
                "p50": c.fmt_ms(res.p50_ms), "p99": c.fmt_ms(res.p99_ms),
                "errors": str(res.error_count),
                "cpu": _pct(c.proxy_pct(res, PROC_NAME[target])) if target != "origin" else "-",
                "kernel": (_pct(c.system_pct(res, PROC_NAME[target]))
                           if target != "origin" else "-"),
                "us": f"{1e6 / eff:.0f}" if eff else "-",
                "ratio": f"{res.rps / ref_rps:.2f}x" if ref_rps else "-",
                "eff": c.fmt_rps(eff),
                "eff_ratio": f"{eff / ref_eff:.2f}x" if eff and ref_eff else "-",
                "each": " ".join(f"{e / 1000:.1f}k" if e else "-" for e in each)
                        if target != "origin" else "-",
            })
        verdict: dict = {}
        lb = chosen.get((workload, "lblab"))
        if lb and ref_rps:
            ratio = lb["result"].rps / ref_rps
            per_cpu = _ratio(_eff(lb), ref_eff)
            verdict.update({
                "goal": f"lblab >= {GOAL_RATIO}x haproxy", "ratio": round(ratio, 3),
                "met": ratio >= GOAL_RATIO,
                "ratio_per_cpu_second": round(per_cpu, 3) if per_cpu else None,
                "met_per_cpu_second": per_cpu is not None and per_cpu >= GOAL_RATIO})
        now, before = rounds.get((workload, "lblab")), rounds.get((workload, BASE))
        if now and before and BASE not in skipped:
            paired = [_ratio(_eff(a), _eff(b)) for a, b in zip(now, before)]
            paired = [p for p in paired if p]
            if paired:
                verdict["vs_base_per_cpu_second"] = round(c.median(paired), 3)
                verdict["vs_base_each_round"] = [round(p, 3) for p in paired]
        if verdict:
            verdicts[workload] = verdict
    return rows, verdicts


def verdict_line(workload: str, v: dict) -> str:
    parts = []
    if "ratio" in v:
        parts.append(
            f"goal ({workload}) LBLab >= {GOAL_RATIO}x HAProxy: {v['ratio']:.2f}x -> "
            f"{'met' if v['met'] else 'NOT met'}")
        if v.get("ratio_per_cpu_second"):
            parts.append(f"per CPU-second: {v['ratio_per_cpu_second']:.2f}x -> "
                         f"{'met' if v['met_per_cpu_second'] else 'NOT met'}")
    if "vs_base_per_cpu_second" in v:
        parts.append(f"{workload}: LBLab vs {BASE} per CPU-second "
                     f"{v['vs_base_per_cpu_second']:.2f}x (median of rounds "
                     + " ".join(f"{p:.2f}" for p in v["vs_base_each_round"]) + ")")
    return "; ".join(parts)


def print_profiles(rounds: dict) -> None:
    print("\nunder cProfile (req/s and ratios above are NOT results: the profiler slows "
          "Python down); per request = over wrk's completed requests")
    for (workload, target), records in rounds.items():
        for n, rec in enumerate(records, 1):
            prof = rec.get("profile")
            if prof is None:
                continue
            print(f"\n== {workload} {target} round {n}: {prof['calls_per_request']} Python "
                  f"calls and {prof['python_us_per_request']} us profiled per request ==")
            print("\n".join(prof["top"]))


def print_syscalls(rounds: dict) -> None:
    print("\nsystem calls per request under strace -c (req/s above are NOT results: strace "
          "slows every call down)")
    for (workload, target), records in rounds.items():
        for n, rec in enumerate(records, 1):
            calls = rec.get("syscalls")
            if calls:
                print(f"{workload} {target} round {n}: " + ", ".join(
                    f"{name} {v:g}" for name, v in calls.items() if v >= 0.05))


def _median_round(records: list[dict]) -> dict:
    ordered = sorted(records, key=lambda r: r["result"].rps)
    return ordered[len(ordered) // 2]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}%"


def main(argv=None) -> int:
    args = parse_args(argv)
    c.handle_sigterm()
    opts = c.wrk_options(args)
    proxy_cpu, client_cpu = c.cpus(args)
    print(c.header("L4 (TCP) relay: LBLab vs HAProxy (one core each)"))
    skipped: dict[str, str] = {}
    if "lblab" in args.targets and (why := c.lblab_runnable()):
        skipped["lblab"] = why
    if "nginx-stream" in args.targets and not STREAM_MODULE.exists():
        skipped["nginx-stream"] = f"{STREAM_MODULE} is not installed"
    targets = [t for t in args.targets if t not in skipped]
    rounds = {(w, t): [] for w in args.workloads for t in targets}
    busy_before = c.warn_if_busy(wait=args.wait_quiet)
    with c.Processes(keep=args.keep) as procs:
        ports = c.free_ports(args.backends)
        backends = [(c.LOCAL, p) for p in ports]
        bulk = procs.path("origin-files", "big.bin")
        bulk.write_bytes(bytes(range(256)) * (args.bulk_kb * 4))
        text = origin_config(procs.path("origin"), ports, bulk)
        c.start_nginx(procs, "origin", text, ports, client_cpu)
        base_tree = None
        if args.baseline:
            try:
                base_tree = c.export_revision(args.baseline, procs.path("base"))
            except c.BenchError as exc:
                skipped[BASE] = str(exc)
        for n in range(args.rounds):
            for key in list(rounds):
                workload, target = key
                if target in skipped:
                    continue
                print(f"round {n + 1}/{args.rounds}: {workload} {target} ...", file=sys.stderr)
                try:
                    rounds[key].append(run_target(target, workload, procs, args, backends, opts,
                                                  base_tree))
                except c.BenchError as exc:
                    skipped[target] = str(exc)
                    print(f"{target}: FAILED\n{exc}", file=sys.stderr)

    rows, verdicts = summarise(rounds, args.targets, args.workloads, skipped)
    print()
    print(c.table(rows, [("workload", "workload"), ("target", "target"), ("rps", "req/s"),
                         ("mbs", "MB/s"), ("p50", "p50 ms"), ("p99", "p99 ms"),
                         ("errors", "errors"), ("ratio", "vs haproxy"), ("cpu", "proxy CPU"),
                         ("kernel", "of it kernel"), ("eff", "req/CPU-s"), ("us", "CPU us/req"),
                         ("eff_ratio", "vs haproxy /CPU-s"),
                         ("each", "each round req/CPU-s")]))
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:g}s "
          f"(+{args.warmup:g}s warm-up) on CPU {client_cpu}; proxies on CPU {proxy_cpu}; "
          f"{args.backends} origin ports; bulk = {args.bulk_kb} KiB; rounds: {args.rounds}")
    for workload, v in verdicts.items():
        print(verdict_line(workload, v))
    if args.profile:
        print_profiles(rounds)
    if args.syscalls:
        print_syscalls(rounds)
    for target, why in skipped.items():
        print(f"skipped {target}: {why.splitlines()[0]}")
    if not args.no_save:
        payload = {
            "args": vars(args),
            "rounds": {f"{w}/{t}": [{k: v for k, v in r.items() if k != "result"} for r in rs]
                       for (w, t), rs in rounds.items()},
            "summary": rows, "verdict": verdicts, "skipped": skipped,
            "core_busy_pct_before": busy_before,
        }
        print(f"results: {c.write_results('l4', payload).relative_to(c.REPO)}")
    return 0 if any(rounds.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
