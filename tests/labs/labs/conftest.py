"""Fixtures for the labs' tests: a private state dir, and every lab run for real, once.

``real_runs`` runs every lab twice (its starting config and its documented fix) in real
sandboxes, a few at a time in threads (each run is mostly waiting: on its traffic, on its
fault schedule), and hands the outcomes to the tests that check the graders' verdicts.
Labs that need a proxy feature this checkout lacks (``needs``) are left out with a reason.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from labs.framework import registry, services
from labs.framework.runner import RunOptions, run_lab

PARALLEL = int(os.environ.get("LBLAB_LAB_TEST_PARALLEL", "4"))
# Labs whose grader compares latencies with a fixed target: they run one at a time, first,
# so the other runs' CPU (locust, proxies) does not become part of the measurement.
SOLO = {"slow-backend-p99"}
RECORDINGS = Path(__file__).parent / "recordings"
# LBLAB_LAB_TEST_SLUGS=a,b: run only these labs for real (while working on them); unset:
# the whole catalog, as CI does.
ONLY = [s for s in os.environ.get("LBLAB_LAB_TEST_SLUGS", "").split(",") if s.strip()]


def selected_labs() -> list:
    return [lab for lab in registry.all_labs() if not ONLY or lab.slug in ONLY]


def missing_capability(lab) -> str | None:
    """Why this checkout cannot run the lab (None when it can)."""
    from proxy.config import ConfigError, parse_config

    for need in lab.spec.needs:
        if need in ("tcp_listeners", "tls"):
            probe = {"listeners": {"t": {"bind": "127.0.0.1:0", "protocol": "tcp", "pool": "p",
                                         **({"tls": {"mode": "passthrough"}} if need == "tls"
                                            else {})}},
                     "pools": {"p": {"backends": [{"name": "x", "address": "127.0.0.1:1"}]}}}
            try:
                parse_config(probe)
            except ConfigError as exc:
                return f"the proxy does not accept {need} yet: {exc}"
    return None


@pytest.fixture(scope="session")
def lab_state(tmp_path_factory):
    state = tmp_path_factory.mktemp("lab-state")
    yield state
    services.stop_redis(state)


@pytest.fixture(scope="session")
def real_runs(lab_state):
    """{(slug, "start"|"solution"): Outcome | Exception}, plus "_seconds": wall time."""
    registry.reload()
    jobs = []
    for lab in selected_labs():
        if missing_capability(lab):
            continue
        jobs.append((lab, "start", lab.topology_text()))
        jobs.append((lab, "solution", lab.solution_text()))

    def one(job):
        lab, label, text = job
        try:
            return run_lab(lab, text, RunOptions(state_dir=lab_state, label=label))
        except Exception as exc:  # reported by the test of that lab
            return exc

    started = time.monotonic()
    solo = [job for job in jobs if job[0].slug in SOLO]
    rest = [job for job in jobs if job[0].slug not in SOLO]
    results = [one(job) for job in solo]
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        results += list(pool.map(one, rest))
    out = {(lab.slug, label): res for (lab, label, _), res in zip(solo + rest, results)}
    out["_seconds"] = time.monotonic() - started
    return out
