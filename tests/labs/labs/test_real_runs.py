"""Every grader on real runs: it fails the lab's starting config and passes its fix.

Each lab runs for real (sandbox, proxy, toy backends, locust, faults), twice; the runs go
a few at a time (conftest.real_runs), a couple of minutes for the whole catalog.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from labs.framework import registry
from tests.labs.labs.conftest import missing_capability, selected_labs

SLUGS = [lab.slug for lab in selected_labs()]


def _evidence(outcome) -> str:
    r = outcome.result
    return f"{r.headline}\n  " + "\n  ".join(r.evidence)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("slug", SLUGS)
def test_grader_fails_the_start_and_passes_the_fix(real_runs, slug):
    lab = registry.get(slug)
    assert not missing_capability(lab), missing_capability(lab)
    start, fix = real_runs[(slug, "start")], real_runs[(slug, "solution")]
    for outcome in (start, fix):
        if isinstance(outcome, Exception):
            raise outcome
    assert not start.result.passed, "the starting config passed:\n" + _evidence(start)
    assert fix.result.passed, "the documented fix failed:\n" + _evidence(fix)
    for outcome in (start, fix):
        rec = outcome.recording
        # L7: requests; L4: connections (UDP: flows, which may outlive the run).
        assert rec.requests() or rec.of_type("connection", "connection_open"), \
            "no request was recorded"
        assert rec.stats.get("requests", 0) > 0, "locust reported nothing"
        assert not rec.notes or all("eligible" in n for n in rec.notes), rec.notes
        for name in ("recording.json", "result.json", "report.html", "report.json"):
            assert (Path(outcome.run_dir) / name).exists()
        assert outcome.sandbox["start_seconds"] and outcome.sandbox["pss_bytes"]["total"] > 0


@pytest.mark.timeout(900)
def test_catalog_time(real_runs):
    """Not a speed assertion: the figure goes to the test log for the report."""
    runs = [v for k, v in real_runs.items() if k != "_seconds"]
    print(f"\n{len(runs)} real lab runs in {real_runs['_seconds']:.0f} s")
    assert runs
