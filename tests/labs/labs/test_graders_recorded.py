"""Every grader is a pure function of a recorded run: replay real recordings.

The recordings (recordings/*.json.gz) come from real runs of each lab's starting config
and its documented fix (``python -m tests.labs.labs.record_fixtures`` writes them).
"""
from __future__ import annotations

import gzip
import json

import pytest

from labs.framework import registry
from labs.framework.recording import Recording
from tests.labs.labs.conftest import RECORDINGS

PAIRS = sorted({p.name.split("--")[0] for p in RECORDINGS.glob("*.json.gz")})


def load(slug: str, label: str) -> Recording:
    with gzip.open(RECORDINGS / f"{slug}--{label}.json.gz", "rt") as fh:
        return Recording.from_json(json.load(fh))


def test_recordings_cover_the_catalog():
    assert {lab.slug for lab in registry.all_labs()} <= set(PAIRS)


@pytest.mark.parametrize("slug", PAIRS)
def test_grader_on_recorded_runs(slug):
    lab = registry.get(slug)
    start, fix = load(slug, "start"), load(slug, "solution")
    bad, good = lab.grade(start), lab.grade(fix)
    assert not bad.passed and good.passed, (bad.evidence, good.evidence)
    again = lab.grade(load(slug, "start"))
    assert again.to_json() == bad.to_json()  # pure: same recording, same verdict
    for result in (bad, good):
        assert result.headline and result.evidence
        assert any(ch.isdigit() for ch in " ".join(result.evidence))  # evidence in numbers
        assert result.chart and result.chart.get("title")
        json.dumps(result.to_json())  # reports need it serialisable
    assert bad.diagrams and all(d["mermaid"].split()[0] in ("sequenceDiagram", "flowchart")
                                for d in bad.diagrams)


def test_scaled_labs_show_production_time():
    start = load("health-check-window", "start")
    text = " ".join(registry.get("health-check-window").grade(start).evidence)
    assert "in production at 1:10" in text


def test_tracing_lab_grades_answers_against_the_events():
    lab = registry.get("502-503-504")
    run = load("502-503-504", "start")
    run.answers = {"A": {"status": 502, "cause": "backend-closed", "backend": "b1"},
                   "B": {"status": 503, "cause": "no-backend", "backend": "none"},
                   "C": {"status": 503, "cause": "no-backend", "backend": "none"}}
    result = lab.grade(run)
    assert not result.passed and result.headline == "2 of 3 incidents named correctly"
    line = [e for e in result.evidence if "incident C" in e][0]
    # Which answers are wrong and where to look, never the right ones.
    assert line.startswith("FAIL") and "status and cause and backend wrong" in line
    assert "termination code" in line
    shown = json.dumps(result.to_json())
    for word in ("504", "response-timeout", "b2"):
        assert word not in line
    assert "response-timeout" not in shown and "truth" not in shown
    assert "the events say" not in shown
    run.answers["C"] = {"status": 504, "cause": "?", "backend": "b2"}
    line = [e for e in lab.grade(run).evidence if "incident C" in e][0]
    assert "cause not answered" in line and "status" not in line.split(".")[0]
