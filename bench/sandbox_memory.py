"""Memory and start time of one learner sandbox (a proxy plus its toy backends).

    .venv/bin/python bench/sandbox_memory.py [--backends 4] [--repeat 3] [--settle 1.0]
                                             [--traffic SECONDS] [--no-preload]

Not a test: nothing here asserts. Each round creates a sandbox through the real
``SandboxService`` (the same code the site and the launcher use, same processes, same
default topology), waits ``--settle`` seconds so the proxy's first health checks have run
(as in a lab), optionally sends ``--traffic`` seconds of requests through the proxy (echo,
login, profile, control; memory a backend only touches when used shows up), then reads every
process of the sandbox from /proc and stops it.

What is counted: every process the sandbox consists of. That is each part's recorded pid
and all its descendants (``Sandbox.measure``), plus any process that started a part but is
not itself a recorded part (e.g. a helper parent the backends were forked from), so a
cheaper-looking layout cannot hide memory in an uncounted process.

- PSS (``Pss:`` of /proc/PID/smaps_rollup): pages shared between processes (the
  interpreter, libraries, copy-on-write pages of a forked parent) are divided among the
  processes sharing them. The sum is what the sandbox really costs the machine. Caveat:
  pages are also shared with *other* processes running the same interpreter and libraries
  (other sandboxes, test runners), which lowers PSS (a few MB when dozens run); this script
  runs one sandbox at a time and says how many other Pythons of this venv were running.
- RSS (``VmRSS:`` of /proc/PID/status): every page a process maps, shared or not; the sum
  counts shared pages once per process, so it overstates the total.
- unique (needs root to see page frame numbers in /proc/PID/pagemap): every physical page
  mapped by any process of the sandbox, counted once. What the sandbox would cost if it
  were the only thing running this interpreter and these libraries: independent of other
  processes, an upper bound for PSS.

With ``--traffic`` the proxy grows until its request lookup (``admin.request_history``,
10,000 request events by default) is full: about +20-25 MB, then flat.

``--no-preload`` starts every backend as its own ``python -m labs.backend`` (how sandboxes
were started before labs/backend/preload.py), for comparison.

The goal (issue): PSS total < 100 MB for 4 backends, start < 2 s. Results go to
bench/results/sandbox-memory-<timestamp>.json with the exact command (``--no-save`` skips).
"""
from __future__ import annotations

import argparse
import array
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402
from labs.sandbox import procs  # noqa: E402
from labs.sandbox.service import Sandbox, SandboxService  # noqa: E402

GOAL_MB = 100
GOAL_START_S = 2.0


def _processes(sb: Sandbox) -> dict[int, str]:
    """pid -> label of every live process that makes up the sandbox."""
    out: dict[int, str] = {}
    if procs.pid_alive(sb.preload_pid, sb.preload_start):
        out[sb.preload_pid] = "preload (the backends' parent)"
    for part, pid in sb.pids.items():
        if not sb.alive(part):
            continue
        out[pid] = part
        for child in procs.descendants(pid):
            out.setdefault(child, f"{part} (child)")
    # A parent that is not a recorded part and not us (e.g. a process the backends are
    # forked from) belongs to the sandbox too.
    for pid in list(out):
        parent = procs.parent_of(pid)
        while parent and parent not in out and parent not in (os.getpid(), 1):
            out[parent] = "helper (parent of a part)"
            for child in procs.descendants(parent):
                out.setdefault(child, "helper (child)")
            parent = procs.parent_of(parent)
    return out


def unique_bytes(pids: list[int]) -> int | None:
    """Bytes of distinct physical pages mapped by ``pids`` (None without root: the kernel
    then hides page frame numbers)."""
    frames: set[int] = set()
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps, \
                    open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
                for line in maps:
                    if line.rstrip().endswith("[vsyscall]"):
                        continue
                    start, end = (int(x, 16) for x in line.split()[0].split("-"))
                    pagemap.seek(start // page * 8)
                    for entry in array.array("Q", pagemap.read((end - start) // page * 8)):
                        if entry >> 63:  # present in RAM; bits 0-54 are the frame number
                            frames.add(entry & ((1 << 55) - 1))
        except (FileNotFoundError, ProcessLookupError):
            continue
        except PermissionError:
            return None
    if frames == {0}:
        return None
    return len(frames) * page


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def _other_pythons(mine: set[int]) -> int:
    """Other processes of this interpreter running now (they share pages, lowering PSS)."""
    exe = os.path.realpath(sys.executable)
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in mine and int(entry) != os.getpid():
            try:
                if os.path.realpath(f"/proc/{entry}/exe") == exe:
                    count += 1
            except OSError:
                pass
    return count


def drive(sb: Sandbox, seconds: float) -> int:
    """Requests through the proxy (and each backend's control API) for ``seconds``."""
    host, port = sb.proxy_url.rsplit("//", 1)[1].rsplit(":", 1)
    paths = [("GET", "/"), ("POST", "/login?user=alice"), ("GET", "/profile"),
             ("GET", "/work?ms=1"), ("GET", "/health")]
    sent = 0
    deadline = time.monotonic() + seconds
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
    try:
        while time.monotonic() < deadline:
            method, path = paths[sent % len(paths)]
            conn.request(method, path)
            conn.getresponse().read()
            sent += 1
    finally:
        conn.close()
    for name in sb.backends:
        procs.http_get(procs.connect_host(sb.inner_host), sb.ports[name], "/_control", 5.0)
    return sent


def measure_once(svc: SandboxService, sandbox_id: str, backends: int, settle: float,
                 traffic: float) -> dict:
    started = time.monotonic()
    sb = svc.create(sandbox_id, backends=backends)
    wall = time.monotonic() - started
    try:
        time.sleep(settle)
        requests = drive(sb, traffic) if traffic else 0
        pids = _processes(sb)
        rows = []
        for pid, label in sorted(pids.items(), key=lambda kv: kv[1]):
            rows.append({"part": label, "pid": pid, "pss": procs.pss_bytes(pid),
                         "rss": procs.rss_bytes(pid), "cmd": _cmdline(pid)})
        return {"start_seconds": sb.start_seconds, "create_wall_seconds": round(wall, 3),
                "processes": rows, "pss_total": sum(r["pss"] for r in rows),
                "rss_total": sum(r["rss"] for r in rows), "unique": unique_bytes(list(pids)),
                "requests": requests,
                "measure_pss": sb.measure("pss"), "measure_rss": sb.measure("rss"),
                "other_pythons": _other_pythons(set(pids))}
    finally:
        svc.stop(sandbox_id, grace=2.0)


def mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=int, default=4, help="toy backends (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="sandboxes, one after another")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to wait after start before measuring (default 1)")
    parser.add_argument("--traffic", type=float, default=0.0, metavar="SECONDS",
                        help="send requests through the proxy this long before measuring")
    parser.add_argument("--no-preload", action="store_true",
                        help="start each backend as its own interpreter (no shared parent)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results JSON")
    args = parser.parse_args()
    c.handle_sigterm()

    how = "each its own interpreter" if args.no_preload else "forked from one preloaded parent"
    print(c.header(f"sandbox memory: 1 proxy + {args.backends} toy backends ({how})"))
    runs = []
    with tempfile.TemporaryDirectory(prefix="lblab-bench-sandbox-") as state:
        svc = SandboxService(state, max_sandboxes=1, preload_backends=not args.no_preload)
        for i in range(args.repeat):
            run = measure_once(svc, f"mem-{i}", args.backends, args.settle, args.traffic)
            runs.append(run)
            print(f"\nround {i + 1}: start {run['start_seconds']:.3f}s, "
                  f"{run['requests']} requests sent "
                  f"(other processes of this python running: {run['other_pythons']})")
            print(c.table(
                [{"part": r["part"], "pid": r["pid"], "pss": mb(r["pss"]), "rss": mb(r["rss"])}
                 for r in run["processes"]]
                + [{"part": "total", "pid": "", "pss": mb(run["pss_total"]),
                    "rss": mb(run["rss_total"])}],
                [("part", "part"), ("pid", "pid"), ("pss", "PSS MB"), ("rss", "RSS MB")]))
            if run["unique"] is not None:
                print(f"unique pages of the sandbox's processes: {mb(run['unique'])} MB")

    pss = [r["pss_total"] for r in runs]
    rss = [r["rss_total"] for r in runs]
    unique = [r["unique"] for r in runs if r["unique"] is not None]
    starts = [r["start_seconds"] for r in runs]
    summary = {
        "backends": args.backends, "preload": not args.no_preload, "runs": args.repeat,
        "settle_s": args.settle,
        "traffic_s": args.traffic,
        "pss_mb": {"median": round(statistics.median(pss) / 1e6, 1),
                   "max": round(max(pss) / 1e6, 1)},
        "rss_mb": {"median": round(statistics.median(rss) / 1e6, 1),
                   "max": round(max(rss) / 1e6, 1)},
        "unique_mb": ({"median": round(statistics.median(unique) / 1e6, 1),
                       "max": round(max(unique) / 1e6, 1)} if unique else None),
        "start_seconds": {"median": round(statistics.median(starts), 3),
                          "max": round(max(starts), 3)},
        "goals": {"pss_mb": GOAL_MB, "start_seconds": GOAL_START_S},
    }
    print(f"\nmedian of {args.repeat}: PSS {summary['pss_mb']['median']} MB "
          f"(max {summary['pss_mb']['max']}), RSS {summary['rss_mb']['median']} MB "
          f"(max {summary['rss_mb']['max']}), "
          + (f"unique {summary['unique_mb']['median']} MB (max {summary['unique_mb']['max']}), "
             if unique else "")
          + f"start {summary['start_seconds']['median']} s "
          f"(max {summary['start_seconds']['max']}); goals: PSS < {GOAL_MB} MB, "
          f"start < {GOAL_START_S:g} s")
    if not args.no_save:
        path = c.write_results("sandbox-memory", {"summary": summary, "rounds": runs})
        print(f"results: {path.relative_to(c.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
