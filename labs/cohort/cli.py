"""``./lab cohort --learners N [--engine processes|docker|swarm]`` (see labs/cohort/__init__.py).

Progress goes to stderr; stdout gets the table, then one JSON object as its last line.
Exit status 0 when every run was graded as expected, no step failed and nothing was left
behind; 1 otherwise; 2 for bad options or a deployment that could not come up.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from labs.cohort import deploy, learner, summary

DEFAULT_LAB = "l4-path-routing"  # short (5 s of traffic), graded on where requests went


class HostMemory:
    """Peak of the machine's used memory (MemTotal - MemAvailable) while the cohort runs."""

    def __init__(self, every: float = 0.5):
        self.every = every
        self.baseline = self.used_mb()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def used_mb() -> float:
        fields = {}
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0])
        return (fields["MemTotal"] - fields["MemAvailable"]) / 1024

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.used_mb())

    def __enter__(self) -> "HostMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./lab cohort", description=__doc__.split("\n")[0])
    parser.add_argument("--learners", type=int, required=True, help="simulated learners, 1-200")
    parser.add_argument("--engine", default="processes", choices=["processes", "docker", "swarm"])
    parser.add_argument("--lab", default=DEFAULT_LAB, help=f"the graded lab (default {DEFAULT_LAB})")
    parser.add_argument("--port-base", type=int, default=31000,
                        help="processes: the site's port; the default sandbox takes the next 6")
    parser.add_argument("--sandbox-ports", default="31100-31999",
                        help="ports learners' sandboxes get (default 31100-31999)")
    parser.add_argument("--run-timeout", type=float, default=300.0,
                        help="seconds one lab run may take before it counts as an error")
    opts = parser.parse_args(argv)
    if not 1 <= opts.learners <= 200:
        parser.error(f"--learners {opts.learners}: give 1 to 200")
    return opts


def run(opts: argparse.Namespace, say=lambda msg: print(f"[cohort] {msg}", file=sys.stderr,
                                                        flush=True)) -> dict:
    began = time.monotonic()
    load = round(os.getloadavg()[0], 2)
    host: dict = {"cpus": os.cpu_count(), "load_1m": load}
    results: list[summary.LearnerResult] = []
    errors: list[str] = []
    mems: list[float] = []
    with HostMemory() as memory:
        target = deploy.make(opts.engine, port_base=opts.port_base,
                             sandbox_ports=opts.sandbox_ports, say=say)
        try:
            say(f"bringing the {opts.engine} deployment up")
            target.up()
            host["bringup_s"] = time.monotonic() - began
            user, password = target.make_instructor()
            code = learner.open_workshop(target.url, user, password,
                                         f"Cohort of {opts.learners}")
            say(f"workshop {code} open at {target.url}; {opts.learners} learners start")
            results = learner.drive(target.url, code, opts.learners, opts.lab,
                                    run_timeout=opts.run_timeout)
            mems = target.sandbox_memory_mb()
        except (deploy.DeployError, learner.StepFailed, OSError) as exc:
            errors.append(f"deployment: {exc}")
            say(f"error: {exc}")
        finally:
            say("tearing down")
            torn = time.monotonic()
            host["left_behind"] = target.down()
            host["teardown_s"] = time.monotonic() - torn
        host["peak_mem_mb"] = memory.peak
        host["baseline_mem_mb"] = memory.baseline
    host["wall_s"] = time.monotonic() - began
    out = summary.summarize(opts.engine, results, sandbox_mem_mb=mems, host=host, errors=errors)
    print(summary.table(out, results), flush=True)
    return out


def _stop_on_sigterm() -> None:
    """SIGTERM (a timeout, a CI job cancelled) tears down like Ctrl-C: run's finally."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    _stop_on_sigterm()
    try:
        out = run(opts)
    except deploy.DeployError as exc:  # refused before anything started
        print(f"./lab cohort: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"./lab cohort: interrupted ({exc or 'Ctrl-C'}); the deployment was torn down",
              file=sys.stderr)
        return 130
    print(json.dumps(out, sort_keys=False), flush=True)
    ok = (out["runs"] > 0 and out["graded_as_expected"] == out["runs"] and not out["errors"]
          and not out["left_behind"])
    return 0 if ok else 1
