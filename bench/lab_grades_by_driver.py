"""The same graded lab runs on the process driver and on the container driver: are the
grades the same? (labs/framework/runner.py, ``RunOptions.driver``; issue 13.)

    LBLAB_DOCKER_DATA=... LBLAB_DOCKER_RUN=... .venv/bin/python bench/lab_grades_by_driver.py \
        [--labs l4-path-routing,lying-health-check,...] [--ports 31100-31899] [--crash]

Starts a Docker engine of its own (docker/engine.py, with the images built), then runs each
lab's starting config and its fix once per driver, one run at a time, and prints one JSON
line per run (slug, label, driver, graded, passed, seconds, headline) and a last line with
whether every lab got the same verdicts on both. ``--crash`` adds lying-health-check with a
crash fault (b2's process exits at lab second 1) in place of its set fault, and a run whose
proxy is killed midway on containers (it must be ungradable: the watchdog saw it die).
Not a test: it asserts nothing; the closing note quotes its output.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lblab.settings")

DEFAULT_LABS = "l4-path-routing,lying-health-check,502-503-504,slow-start-grace"


def crash_variant(lab):
    from labs.framework.definition import Fault

    fault = Fault(at="1s", backend="b2", crash=True, label="b2 crashes")
    spec = lab.spec.model_copy(update={"faults": [fault]})
    return dataclasses.replace(lab, slug=f"{lab.slug}", spec=spec)


def one(lab, label: str, driver, state: Path, kill_proxy: bool = False) -> dict:
    from labs.framework.runner import RunFailed, RunOptions, run_lab

    text = lab.topology_text() if label == "start" else lab.solution_text()
    sid = f"lab-cmp-{int(time.time() * 1000) % 10**8}"
    phases: list[str] = []
    if kill_proxy:
        def killer():
            while phases.count("traffic") < 6:
                time.sleep(0.05)
            driver.kill_part(sid, "proxy")

        threading.Thread(target=killer, daemon=True).start()
    started = time.monotonic()
    try:
        out = run_lab(lab, text, RunOptions(state_dir=state, sandbox_id=sid, driver=driver,
                                            label=label,
                                            progress=lambda s: phases.append(s["phase"])))
    except RunFailed as exc:
        return {"slug": lab.slug, "label": label, "error": str(exc)[:300]}
    return {"slug": lab.slug, "label": label,
            "driver": out.sandbox["placement"]["driver"], "graded": out.result.graded,
            "passed": out.result.passed, "seconds": round(time.monotonic() - started, 1),
            "headline": out.result.headline[:160]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labs", default=DEFAULT_LABS)
    parser.add_argument("--ports", default="31100-31899")
    parser.add_argument("--crash", action="store_true")
    opts = parser.parse_args()
    import django

    django.setup()
    from docker import images
    from docker.engine import Engine
    from labs.framework import registry
    from labs.sandbox.containers import ContainerDriver

    lo, hi = (int(p) for p in opts.ports.split("-"))
    engine = Engine().start()
    rows = []
    try:
        images.build_all(quiet=True, docker_host=engine.host)
        with tempfile.TemporaryDirectory(prefix="lblab-grades-") as tmp:
            state = Path(tmp)
            containers = ContainerDriver(state_dir=state, port_range=(lo, hi),
                                         docker_host=engine.host, start_timeout=60)
            labs = [registry.get(s) for s in opts.labs.split(",") if s]
            if opts.crash:
                labs.append(crash_variant(registry.get("lying-health-check")))
            for lab in labs:
                for label in ("start", "fix"):
                    for driver in (None, containers):
                        row = one(lab, label, driver, state)
                        row["crash_variant"] = lab.spec.faults[0].crash is True \
                            if lab.spec.faults else False
                        rows.append(row)
                        print(json.dumps(row), flush=True)
            if opts.crash:
                row = one(registry.get("lying-health-check"), "fix", containers, state,
                          kill_proxy=True)
                row["proxy_killed_midway"] = True
                print(json.dumps(row), flush=True)
    finally:
        engine.stop()
    verdicts: dict = {}
    for r in rows:
        key = (r["slug"], r["label"], r["crash_variant"])
        verdicts.setdefault(key, set()).add((r.get("graded"), r.get("passed"), "error" in r))
    same = all(len(v) == 1 for v in verdicts.values())
    print(json.dumps({"runs": len(rows), "same_verdicts_on_both_drivers": same,
                      "differ": [list(k) for k, v in verdicts.items() if len(v) > 1]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
