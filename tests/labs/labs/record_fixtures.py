"""Record real runs of the labs as test fixtures for the graders' pure tests.

    python -m tests.labs.labs.record_fixtures [SLUG ...]

Runs each lab's starting config and its fix (4 at a time), checks the verdicts, and
writes ``recordings/<slug>--start.json.gz`` and ``--solution.json.gz``. Re-record after
changing a lab's traffic, faults or the proxy's event format.
"""
from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lblab.settings")
django.setup()

from labs.framework import registry, services  # noqa: E402
from labs.framework.runner import RunOptions, run_lab  # noqa: E402
from tests.labs.labs.conftest import RECORDINGS, missing_capability  # noqa: E402


def main(slugs: list[str]) -> int:
    labs = [registry.get(s) for s in slugs] if slugs else registry.all_labs()
    state = Path(tempfile.mkdtemp(prefix="lab-fixtures-"))
    jobs = [(lab, label, text) for lab in labs if not missing_capability(lab)
            for label, text in (("start", lab.topology_text()), ("solution", lab.solution_text()))]

    def one(job):
        lab, label, text = job
        return run_lab(lab, text, RunOptions(state_dir=state, label=label))

    started = time.monotonic()
    bad = 0
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for (lab, label, _), outcome in zip(jobs, pool.map(one, jobs)):
                ok = outcome.result.passed == (label == "solution")
                bad += not ok
                print(f"{'ok ' if ok else 'BAD'} {lab.slug:24} {label:8} "
                      f"{outcome.result.headline}")
                path = RECORDINGS / f"{lab.slug}--{label}.json.gz"
                with gzip.open(path, "wt") as fh:
                    json.dump(outcome.recording.to_json(), fh, separators=(",", ":"), default=str)
    finally:
        services.stop_redis(state)
    print(f"{len(jobs)} runs in {time.monotonic() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
