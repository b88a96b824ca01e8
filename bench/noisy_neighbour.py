"""A learner sandbox's cost, and a quiet learner's lab run next to a noisy neighbour.

    .venv/bin/python bench/noisy_neighbour.py [--lab 502-503-504] [--runs 3]
        [--users 100] [--profile heavy_user] [--no-limits] [--no-save]

Not a test: nothing here asserts. Three measurements, one after another, in a scratch
state directory:

1. One learner sandbox (4 toy backends + proxy, with the OS limits learners get,
   labs/sandbox/limits.py): its start time (spawn to every part answering) and its
   memory (PSS, shared pages split between the processes sharing them).
2. The quiet learner: ``manage.py labs run LAB --solution`` (a real graded run: its own
   sandbox, the lab's traffic, grading), ``--runs`` times, alone; wall time of each.
3. The same runs while a neighbour's sandbox takes the heaviest traffic profile the site
   offers (``heavy_user``: most users at 50 requests/s each, ``--users`` of them) from
   the site's own traffic service (locust). Both sandboxes get the learners' OS limits
   unless ``--no-limits``; the load generator is the site's, as on a hosted machine.

Wall times on a shared machine are noisy: the median of ``--runs`` is reported with the
min and max, and the machine's other load shows in the spread. Results go to
bench/results/noisy-neighbour-<timestamp>.json with the exact command.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, write_results  # noqa: E402
from labs.sandbox import SandboxService  # noqa: E402
from labs.sandbox.limits import Limits  # noqa: E402


def sandbox_cost(state: Path, limits: Limits | None) -> dict:
    svc = SandboxService(state, limits=limits)
    sb = svc.create("bench-cost", backends=4, timeout=30)
    try:
        time.sleep(1.0)  # the first health checks, as in a lab
        pss = sb.measure("pss")
        return {"start_seconds": sb.start_seconds, "pss_mb": round(pss["total"] / 1e6, 1),
                "pss_mb_per_part": {k: round(v / 1e6, 1) for k, v in pss.items() if k != "total"},
                "limits_mode": limits.mode() if limits else "none"}
    finally:
        svc.stop("bench-cost", grace=2)


def lab_run(lab: str, state: Path, env: dict) -> dict:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "manage.py", "labs", "run", lab, "--solution",
                           "--json", "--state-dir", str(state)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    try:
        result = json.loads(done.stdout)
    except ValueError:
        return {"wall_s": round(wall, 2), "error": (done.stderr or done.stdout)[-400:]}
    return {"wall_s": round(wall, 2), "passed": result.get("passed"),
            "phases": result.get("phases")}


def summary(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs if "error" not in r]
    if not walls:
        return {"runs": runs}
    return {"median_s": round(statistics.median(walls), 2), "min_s": min(walls),
            "max_s": max(walls), "passed": sum(1 for r in runs if r.get("passed")),
            "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lab", default="502-503-504")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--profile", default="heavy_user")
    ap.add_argument("--no-limits", action="store_true")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()

    limits = None if args.no_limits else Limits.from_env()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "lblab.settings"}
    if args.no_limits:
        env["LBLAB_SANDBOX_NO_LIMITS"] = "1"
    from labs.traffic import TrafficService

    with tempfile.TemporaryDirectory(prefix="lblab-noisy-") as tmp:
        state = Path(tmp)
        cost = sandbox_cost(state, limits)
        print(f"sandbox: start {cost['start_seconds']} s, PSS {cost['pss_mb']} MB "
              f"(limits: {cost['limits_mode']})", flush=True)

        quiet = [lab_run(args.lab, state / "quiet", env) for _ in range(args.runs)]
        alone = summary(quiet)
        print(f"quiet lab run alone: median {alone.get('median_s')} s", flush=True)

        svc = SandboxService(state / "noisy", limits=limits)
        neighbour = svc.create("noisy", backends=4, timeout=30)
        traffic = TrafficService(state / "noisy")
        duration = int(args.runs * 40 + 60)
        run = traffic.start(neighbour, args.profile, users=args.users,
                            spawn_rate=float(args.users), duration_s=duration)
        try:
            time.sleep(5)  # let the neighbour's users ramp up
            noisy = [lab_run(args.lab, state / "quiet", env) for _ in range(args.runs)]
            load = traffic.status(run["run_id"])
        finally:
            traffic.stop(run["run_id"], grace=5)
            svc.stop("noisy", grace=2)
        beside = summary(noisy)
        print(f"quiet lab run beside a noisy neighbour: median {beside.get('median_s')} s "
              f"(neighbour: {args.profile}, {args.users} users, "
              f"{(load.get('stats') or {}).get('rps', '?')} req/s)", flush=True)

    payload = {"lab": args.lab, "profile": args.profile, "users": args.users,
               "limits": None if limits is None else limits.__dict__,
               "sandbox": cost, "alone": alone, "beside_noisy_neighbour": beside,
               "neighbour_traffic": load.get("stats")}
    if not args.no_save:
        print(f"results: {write_results('noisy-neighbour', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
