"""HTTP/2 throughput: LBLab's HTTP/2 listener against nginx's, on one connection and many.

In one run, h2load (nghttp2-client) drives cleartext HTTP/2 with prior knowledge,
for each target and each shape:

  one    1 connection carrying --streams concurrent streams (the gRPC-channel shape:
         everything multiplexed on one connection)
  many   --connections connections, --streams-many concurrent streams each

Targets: `lblab` (`python -m proxy`, `http2: true`, round robin over the origin
ports, backends over HTTP/1.1 keep-alive) and `nginx` (`listen ... http2`,
proxy_pass with upstream keep-alive to the same ports). Each runs alone, pinned
to --proxy-cpu; h2load and the origin nginx share --client-cpu. The table gives
req/s, mean request time, failures, the proxy's CPU during the measured run
(h2load's warm-up is a run of its own before it) and LBLab's ratio to nginx per
shape, raw and per CPU-second of the proxy.

    .venv/bin/python bench/http2.py -d 10
    .venv/bin/python bench/http2.py -d 5 --streams 50 --connections 20
    .venv/bin/python bench/http2.py -d 6 --targets lblab --baseline HEAD~1
Needs h2load: `apt-get install nghttp2-client`. (Not named h2.py: bench/ is on
sys.path when bench scripts run, and a bench/h2.py would hide the h2 package.)
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"
TARGETS = ("lblab", "nginx")
BASE = "lblab@base"  # lblab at --baseline REV


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    c.add_common_args(parser, connections=20)
    parser.add_argument("--streams", type=int, default=100,
                        help="concurrent streams on the single connection (default 100)")
    parser.add_argument("--streams-many", type=int, default=10,
                        help="concurrent streams per connection in the many shape (default 10)")
    parser.add_argument("--backends", type=int, default=4, help="origin ports (default 4)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--baseline", metavar="REV",
                        help="also run lblab from the proxy at this git revision (lblab@base), "
                             "right after lblab")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if set(args.targets) - set(TARGETS):
        parser.error(f"targets are {', '.join(TARGETS)}")
    if args.baseline and "lblab" in args.targets:
        args.targets.insert(args.targets.index("lblab") + 1, BASE)
    return args


def nginx_h2_config(work: Path, port: int, backends) -> str:
    """nginx's own proxy config with its listener switched to cleartext HTTP/2."""
    text = c.nginx_proxy_config(work, port, backends)
    return text.replace(f"listen {c.LOCAL}:{port} reuseport backlog=4096;",
                        f"listen {c.LOCAL}:{port} http2 reuseport backlog=4096;\n"
                        "        http2_max_concurrent_streams 1000;\n"
                        "        keepalive_requests 1000000;")


def run_h2load(url: str, clients: int, streams: int, args, proc: c.Proc | None = None) -> dict:
    """One h2load run: a warm-up run first (not measured), then the measured one, with
    the CPU `proc` (the proxy) used during it only."""
    client_cpu = c.cpus(args)[1]

    def argv(seconds) -> list[str]:
        return c.pinned(client_cpu, [H2LOAD, "-c", str(clients), "-m", str(streams), "-t", "1",
                                     "-D", str(seconds), url])

    if args.warmup > 0:
        subprocess.run(argv(args.warmup), capture_output=True, text=True,
                       timeout=args.warmup + 60)
    measured = argv(args.duration)
    meter = c.CpuMeter([proc] if proc is not None else [])
    done = subprocess.run(measured, capture_output=True, text=True, timeout=args.duration + 60)
    cpu = meter.stop()
    out = done.stdout + done.stderr
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    reqs = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    if rps is None or reqs is None:
        raise c.BenchError(f"h2load output not understood:\n$ {' '.join(measured)}\n{out}")
    pct = cpu["process_pct"].get(proc.name) if proc is not None else None
    return {"command": " ".join(measured), "rps": float(rps.group(1)),
            "done": int(reqs.group(3)), "succeeded": int(reqs.group(4)),
            "failed": int(reqs.group(5)) + int(reqs.group(6)),
            "mean": mean.group(1) if mean else "?", "cpu_pct": pct,
            "per_cpu_s": float(rps.group(1)) / (pct / 100.0) if pct else None,
            "output": out}


def main(argv=None) -> int:
    args = parse_args(argv)
    c.handle_sigterm()
    if not Path(H2LOAD).exists():
        print("h2load is missing: apt-get install nghttp2-client", file=sys.stderr)
        return 2
    proxy_cpu, client_cpu = c.cpus(args)
    print(c.header("HTTP/2 listener: LBLab vs nginx, one connection and many (one core each)"))
    shapes = {"one": (1, args.streams), "many": (args.connections, args.streams_many)}
    results: dict = {}
    with c.Processes(keep=args.keep) as procs:
        ports = c.free_ports(args.backends)
        backends = [(c.LOCAL, p) for p in ports]
        c.start_origin(procs, ports, cpu=client_cpu)
        base_tree = (c.export_revision(args.baseline, procs.path("base"))
                     if args.baseline else None)
        for target in args.targets:
            port = c.free_port()
            if target in ("lblab", BASE):
                config = c.lblab_config(port, c.free_port(), {"web": c.lblab_pool(backends)})
                config["listeners"]["web"]["http2"] = {"max_concurrent_streams": 1000}
                proc = (c.start_lblab(procs, "lblab", config, port, proxy_cpu)
                        if target == "lblab" else
                        c.start_lblab_at(procs, "lblab", config, port, proxy_cpu, base_tree))
            else:
                text = nginx_h2_config(procs.path("nginx-h2"), port, backends)
                proc = c.start_nginx(procs, "nginx-h2", text, [port], proxy_cpu)
            try:
                for shape, (clients, streams) in shapes.items():
                    results[(target, shape)] = run_h2load(f"http://{c.LOCAL}:{port}/",
                                                          clients, streams, args, proc)
            finally:
                procs.stop(proc)
    rows = []
    for shape, (clients, streams) in shapes.items():
        nginx = results.get(("nginx", shape))
        for target in args.targets:
            r = results[(target, shape)]
            eff, ref = r.get("per_cpu_s"), nginx.get("per_cpu_s") if nginx else None
            rows.append({"shape": f"{shape} ({clients} conn x {streams} streams)",
                         "target": target, "rps": c.fmt_rps(r["rps"]), "mean": r["mean"],
                         "failed": str(r["failed"]),
                         "cpu": f"{r['cpu_pct']:.0f}%" if r.get("cpu_pct") else "-",
                         "eff": c.fmt_rps(eff),
                         "ratio": f"{r['rps'] / nginx['rps']:.2f}x" if nginx else "-",
                         "eff_ratio": f"{eff / ref:.2f}x" if eff and ref else "-"})
    print()
    print(c.table(rows, [("shape", "shape"), ("target", "target"), ("rps", "req/s"),
                         ("mean", "mean req time"), ("failed", "failed"),
                         ("ratio", "vs nginx"), ("cpu", "proxy CPU"), ("eff", "req/CPU-s"),
                         ("eff_ratio", "vs nginx /CPU-s")]))
    print(f"\nh2load -D {args.duration}s (+{args.warmup}s warm-up) on CPU {client_cpu}; "
          f"proxies on CPU {proxy_cpu}; {args.backends} origin ports")
    if not args.no_save:
        payload = {"args": vars(args),
                   "results": {f"{t}/{s}": {k: v for k, v in r.items() if k != "output"}
                               for (t, s), r in results.items()},
                   "summary": rows}
        print(f"results: {c.write_results('http2', payload).relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
