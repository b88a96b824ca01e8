"""What a cohort run measured, summed up: percentiles, the JSON summary, the table.

Pure: no sockets, no clock, no files. The learner driver (learner.py) fills one
``LearnerResult`` per simulated learner; ``summarize`` turns them, with the host's figures,
into the one JSON object ``./lab cohort`` prints last, and ``table`` into the lines before it.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RunResult:
    """One graded lab run a learner started through the site."""

    label: str  # "start" (the lab's starting config) or "fix" (its documented fix)
    expected_pass: bool
    passed: bool | None = None  # None: no verdict (the run failed, was refused or not graded)
    state: str = ""  # the run's last state: done, failed, refused, or "" if it never started
    seconds: float | None = None  # from the POST that started it to the poll that saw it end
    sandbox_start_s: float | None = None  # the run's sandbox, as its driver measured it
    sandbox_mem_mb: float | None = None  # the run's sandbox (PSS of its processes)
    driver: str | None = None  # where its sandbox ran (labs/framework/placement.py)
    requests: int | None = None  # what its traffic got answered (None: not known)

    @property
    def as_expected(self) -> bool:
        # A verdict on no traffic at all is no verdict (a starting config "fails" then too).
        return (self.state == "done" and self.passed is self.expected_pass
                and self.requests != 0)


@dataclass
class LearnerResult:
    name: str
    join_s: float | None = None  # join form posted -> the learner's workshop page
    sandbox_start_s: float | None = None  # "Start my sandbox" pressed -> its answer
    dashboard_live_s: float | None = None  # socket opened -> a tick with our own request
    ticks: int = 0  # live messages the dashboard's socket received in all
    runs: list[RunResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100) of ``values``; None when there are none.

    Nearest rank: the value at rank ceil(q/100 * n) of the sorted values, so p95 of 20
    values is the 19th, and every reported figure is one that was really measured."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q}: give 0 to 100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _median(values: list[float]) -> float | None:
    return percentile(values, 50)


def summarize(engine: str, learners: list[LearnerResult], *, sandbox_mem_mb: list[float],
              host: dict, errors: list[str] = ()) -> dict:
    """The cohort's figures as one JSON-ready dict.

    ``sandbox_mem_mb``: the idle memory of each learner's own sandbox as the engine or the
    OS charges it (the caller measures it: containers from the engine, processes by PSS).
    ``host``: peak_mem_mb, baseline_mem_mb, cpus, load_1m, bringup_s, teardown_s, wall_s,
    left_behind (the deployment's own figures). ``errors``: the deployment's, beside the
    learners' own."""
    runs = [run for learner in learners for run in learner.runs]
    lab_seconds = [run.seconds for run in runs if run.seconds is not None]
    starts = [x.sandbox_start_s for x in learners if x.sandbox_start_s is not None]
    lab_starts = [run.sandbox_start_s for run in runs if run.sandbox_start_s is not None]
    lab_mems = [run.sandbox_mem_mb for run in runs if run.sandbox_mem_mb is not None]
    all_errors = [*errors, *(f"{x.name}: {e}" for x in learners for e in x.errors)]
    return {
        "engine": engine,
        "learners": len(learners),
        "runs": len(runs),
        "graded_as_expected": sum(run.as_expected for run in runs),
        "errors": len(all_errors),
        "lab_p50_s": _r(percentile(lab_seconds, 50)),
        "lab_p95_s": _r(percentile(lab_seconds, 95)),
        "lab_max_s": _r(max(lab_seconds, default=None)),
        "sandbox_start_p50_s": _r(percentile(starts, 50)),
        "sandbox_start_p95_s": _r(percentile(starts, 95)),
        "lab_sandbox_start_p95_s": _r(percentile(lab_starts, 95)),
        "sandbox_mem_mb": _r(_median(list(sandbox_mem_mb)), 1),
        "lab_sandbox_mem_mb": _r(_median(lab_mems), 1),
        # Where the graded runs' sandboxes ran: {driver: runs} (a container deployment's
        # runs are containers unless the lab needs processes).
        "lab_runs_on": dict(Counter(run.driver for run in runs if run.driver)),
        "join_p95_s": _r(percentile([x.join_s for x in learners if x.join_s is not None], 95)),
        "dashboard_live_p95_s": _r(percentile(
            [x.dashboard_live_s for x in learners if x.dashboard_live_s is not None], 95)),
        "dashboards_live": sum(1 for x in learners if x.dashboard_live_s is not None),
        "peak_host_mem_mb": _r(host.get("peak_mem_mb"), 0),
        "baseline_host_mem_mb": _r(host.get("baseline_mem_mb"), 0),
        "cpus": host.get("cpus"),
        "load_1m_before": host.get("load_1m"),
        "bringup_s": _r(host.get("bringup_s"), 1),
        "teardown_s": _r(host.get("teardown_s"), 1),
        "wall_s": _r(host.get("wall_s"), 1),
        "left_behind": host.get("left_behind", []),
        "error_samples": all_errors[:10],
    }


def holds(summary: dict, single_lab_s: float | None, factor: float = 3.0) -> bool:
    """The issue's goal for one N: every run graded as expected, no error, and the lab's
    p95 within ``factor`` times a single learner's lab time (when that is known)."""
    ok = (summary["runs"] > 0 and summary["graded_as_expected"] == summary["runs"]
          and summary["errors"] == 0 and not summary["left_behind"])
    if ok and single_lab_s is not None and summary["lab_p95_s"] is not None:
        ok = summary["lab_p95_s"] <= factor * single_lab_s
    return ok


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _grid(header: list[str], rows: list[list]) -> list[str]:
    cells = [header, *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def table(summary: dict, learners: list[LearnerResult]) -> str:
    """One line per learner (join, sandbox start, dashboard, each run), then the totals."""
    labels = list(dict.fromkeys(run.label for x in learners for run in x.runs))  # run order
    header = ["learner", "join s", "sandbox s", "live s", "ticks",
              *[f"{label} (want {'pass' if _wants(learners, label) else 'fail'})"
                for label in labels], "errors"]
    rows = []
    for x in learners:
        by_label = {run.label: run for run in x.runs}
        rows.append([x.name, _r(x.join_s), _r(x.sandbox_start_s), _r(x.dashboard_live_s),
                     x.ticks, *[_run_cell(by_label.get(label)) for label in labels],
                     len(x.errors)])
    totals = [
        f"engine {summary['engine']}, {summary['learners']} learners: "
        f"{summary['graded_as_expected']}/{summary['runs']} runs graded as expected, "
        f"{summary['errors']} errors",
        f"lab time p50 {_cell(summary['lab_p50_s'])} s, p95 {_cell(summary['lab_p95_s'])} s; "
        f"sandbox start p95 {_cell(summary['sandbox_start_p95_s'])} s (learner's own), "
        f"{_cell(summary['lab_sandbox_start_p95_s'])} s (lab runs')",
        f"sandbox memory {_cell(summary['sandbox_mem_mb'])} MB idle (learner's own), "
        f"{_cell(summary['lab_sandbox_mem_mb'])} MB (lab runs'); host memory peak "
        f"{_cell(summary['peak_host_mem_mb'])} MB (before: "
        f"{_cell(summary['baseline_host_mem_mb'])} MB, the machine is shared)",
    ]
    if summary["left_behind"]:
        totals.append(f"LEFT BEHIND: {', '.join(summary['left_behind'])}")
    return "\n".join([*_grid(header, rows), "", *totals])


def _wants(learners: list[LearnerResult], label: str) -> bool:
    return next(run.expected_pass for x in learners for run in x.runs if run.label == label)


def _run_cell(run: RunResult | None) -> str:
    if run is None:
        return "-"
    verdict = {True: "pass", False: "fail", None: run.state or "none"}[run.passed]
    mark = "ok" if run.as_expected else "WRONG"
    return f"{verdict} {mark} {_cell(_r(run.seconds))}s"
