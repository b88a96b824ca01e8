"""TLS handshakes per second: LBLab terminating TLS against nginx (one core each).

Every connection is a full handshake (`openssl s_time -new`: no session reuse) with the
same certificate (EC P-256, from the lab PKI made for the run by `proxy.pki.init`), the
same TLS version (--tls 1.3 or 1.2) and no request after it: what is measured is the
handshake, the accept and the close, which is what a TLS listener pays per client.

  lblab   `python -m proxy`, an http listener with tls (terminate), a fixed-response route
  nginx   one worker, `listen ssl`, session cache and tickets off, `return 200`

--clients s_time processes run in parallel on --client-cpu (the client side of a
handshake costs about as much as the server side, so the client core can be the limit:
watch the proxy CPU column, and the per-CPU-second rate, which does not depend on it).

    .venv/bin/python bench/tls.py -d 10 --clients 4
    .venv/bin/python bench/tls.py -d 5 --tls 1.2 --rounds 3
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

TARGETS = ("lblab", "nginx")
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
PROC_NAME = {"lblab": "lblab", "nginx": "nginx-tls"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("-d", "--duration", type=int, default=10,
                        help="seconds measured per target (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded seconds first (1)")
    parser.add_argument("--clients", type=int, default=4,
                        help="parallel `openssl s_time -new` processes (default 4)")
    parser.add_argument("--tls", choices=["1.2", "1.3"], default="1.3",
                        help="TLS version of every handshake (default 1.3)")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every target this many times, interleaved (median)")
    p = parser.add_argument_group("pinning")
    p.add_argument("--proxy-cpu", type=int, default=c.PROXY_CPU)
    p.add_argument("--client-cpu", type=int, default=c.CLIENT_CPU)
    p.add_argument("--no-pin", action="store_true")
    parser.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS",
                        help="wait up to this long for idle cores before starting")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    return args


# ---------------------------------------------------------------- targets

def lblab_config(port: int, admin_port: int, cert: Path, key: Path, tls: str) -> dict:
    return {
        "admin": {"listen": f"{c.LOCAL}:{admin_port}"},
        "listeners": {"web": {
            "bind": f"{c.LOCAL}:{port}", "protocol": "http", "routes": ["ok"],
            "tls": {"certificates": [{"cert": str(cert), "key": str(key)}],
                    "min_version": tls}}},
        "routes": {"ok": {"match": {}, "respond": {"status": 200, "body": "ok"}}},
        "pools": {},
        "access_log": None,
    }


def nginx_config(work: Path, port: int, cert: Path, key: Path, tls: str) -> str:
    protocols = "TLSv1.3" if tls == "1.3" else "TLSv1.2 TLSv1.3"
    return c._nginx_main(work) + "http {\n" + c._nginx_http_common(work) + f"""\
    server {{
        listen {c.LOCAL}:{port} ssl reuseport backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {protocols};
        ssl_session_cache off;
        ssl_session_tickets off;
        location / {{ default_type text/plain; return 200 "ok"; }}
    }}
}}
"""


# ---------------------------------------------------------------- driver

_S_TIME = re.compile(r"(\d+) connections in ([\d.]+)s")


def s_time(port: int, seconds: int, clients: int, tls: str, cpu: int | None) -> dict:
    """`clients` parallel s_time -new runs; total handshakes / wall time."""
    argv = [OPENSSL, "s_time", "-connect", f"{c.LOCAL}:{port}", "-new", "-time", str(seconds),
            "-tls1_3" if tls == "1.3" else "-tls1_2"]
    started = time.monotonic()
    runs = [subprocess.Popen(c.pinned(cpu, argv), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(clients)]
    outputs = []
    for run in runs:
        out, _ = run.communicate(timeout=seconds + 60)
        outputs.append(out)
    wall = time.monotonic() - started
    total = 0
    for out in outputs:
        m = _S_TIME.search(out)
        if not m:
            raise c.BenchError(f"openssl s_time gave no count:\n{out[-800:]}")
        total += int(m.group(1))
    return {"handshakes": total, "seconds": round(wall, 3),
            "per_second": total / wall if wall else 0.0, "command": " ".join(argv),
            "clients": clients}


def run_target(target: str, procs: c.Processes, args, pki_dir: Path) -> dict:
    proxy_cpu, client_cpu = c.cpus(args)
    cert, key = pki_dir / "www.lab.test.pem", pki_dir / "www.lab.test.key"
    port = c.free_port()
    record: dict = {"target": target}
    proc = None
    try:
        if target == "lblab":
            config = lblab_config(port, c.free_port(), cert, key, args.tls)
            proc = c.start_lblab(procs, "lblab", config, port, proxy_cpu)
            record["config"] = config
        else:
            text = nginx_config(procs.path("nginx-tls"), port, cert, key, args.tls)
            proc = c.start_nginx(procs, "nginx-tls", text, [port], proxy_cpu)
            record["config"] = text
        if args.warmup:
            s_time(port, args.warmup, args.clients, args.tls, client_cpu)
        meter = c.CpuMeter([proc])
        result = s_time(port, args.duration, args.clients, args.tls, client_cpu)
        cpu = meter.stop()
        result["proxy_cpu_pct"] = cpu["process_pct"].get(proc.name)
        result["core_busy_pct"] = cpu["core_busy_pct"]
        record["result"] = result
    finally:
        if proc is not None:
            procs.stop(proc)
    return record


def _per_cpu(result: dict) -> float | None:
    pct = result.get("proxy_cpu_pct")
    return result["per_second"] / (pct / 100.0) if pct else None


def main(argv=None) -> int:
    args = parse_args(argv)
    c.handle_sigterm()
    print(c.header(f"TLS {args.tls} handshakes/s terminated: LBLab vs nginx (one core each)"))
    skipped: dict[str, str] = {}
    if "lblab" in args.targets and (why := c.lblab_runnable()):
        skipped["lblab"] = why
    rounds = {t: [] for t in args.targets if t not in skipped}
    busy_before = c.warn_if_busy(wait=args.wait_quiet)
    from proxy import pki

    with c.Processes(keep=args.keep) as procs:
        pki_dir = procs.path("pki")
        pki.init(pki_dir, names=["www.lab.test"], backends=[], clients=[])
        for n in range(args.rounds):
            for target in list(rounds):
                print(f"round {n + 1}/{args.rounds}: {target} ...", file=sys.stderr)
                try:
                    rounds[target].append(run_target(target, procs, args, pki_dir))
                except c.BenchError as exc:
                    skipped[target] = str(exc)
                    rounds.pop(target)
                    print(f"{target}: FAILED\n{exc}", file=sys.stderr)
    chosen = {t: sorted(r, key=lambda x: x["result"]["per_second"])[len(r) // 2]
              for t, r in rounds.items() if r}
    ref = chosen.get("nginx", {}).get("result")
    rows = []
    for target in args.targets:
        rec = chosen.get(target)
        if rec is None:
            rows.append({"target": target, "hs": "skipped"})
            continue
        res = rec["result"]
        eff = _per_cpu(res)
        ref_eff = _per_cpu(ref) if ref else None
        rows.append({
            "target": target, "hs": c.fmt_rps(res["per_second"]),
            "n": f"{res['handshakes']:,}",
            "cpu": f"{res['proxy_cpu_pct']:.0f}%" if res.get("proxy_cpu_pct") else "-",
            "ratio": f"{res['per_second'] / ref['per_second']:.2f}x" if ref else "-",
            "eff": c.fmt_rps(eff),
            "eff_ratio": f"{eff / ref_eff:.2f}x" if eff and ref_eff else "-",
        })
    print()
    print(c.table(rows, [("target", "target"), ("hs", "handshakes/s"), ("n", "handshakes"),
                         ("cpu", "proxy CPU"), ("ratio", "vs nginx"),
                         ("eff", "handshakes/CPU-s"), ("eff_ratio", "vs nginx /CPU-s")]))
    proxy_cpu, client_cpu = c.cpus(args)
    print(f"\n{args.clients} x `openssl s_time -new -tls1_{args.tls[-1]}` for {args.duration}s "
          f"(+{args.warmup}s warm-up) on CPU {client_cpu}; proxies on CPU {proxy_cpu}; "
          f"EC P-256 certificate; rounds: {args.rounds}")
    for target, why in skipped.items():
        print(f"skipped {target}: {why.splitlines()[0]}")
    if not args.no_save:
        payload = {"args": vars(args), "rounds": rounds, "summary": rows, "skipped": skipped,
                   "core_busy_pct_before": busy_before}
        print(f"results: {c.write_results('tls', payload).relative_to(c.REPO)}")
    return 0 if chosen else 1


if __name__ == "__main__":
    sys.exit(main())
