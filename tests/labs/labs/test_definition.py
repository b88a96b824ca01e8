"""Lab folders: every shipped lab is complete; an incomplete one is refused with reasons."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.core import checks

from labs.framework import definition, registry

CATALOG = definition.CATALOG
REQUIRED_LABS = 12


def test_every_shipped_lab_is_complete():
    registry.reload()
    assert registry.problems() == {}
    labs = registry.all_labs()
    assert len(labs) >= REQUIRED_LABS
    for lab in labs:
        assert lab.spec.steps and lab.spec.task and lab.solution_md.strip()
        assert callable(lab.grader.grade)
        assert lab.locustfile().exists(), lab.slug
        # Each lab ships its documented fix, different from where it starts.
        assert lab.solution != lab.topology, lab.slug


def test_one_lab_is_loaded_alone_and_the_catalog_keeps_it():
    """A graded run's command asks for one lab: only its folder is read, and the whole
    catalog, read later, holds that same lab (not a second copy)."""
    registry.reload()
    lab = registry.get("l4-path-routing")
    assert list(registry._single) == ["l4-path-routing"] and registry._cache is None
    assert next(x for x in registry.all_labs() if x.slug == "l4-path-routing") is lab
    registry.reload()
    for name in ("no-such-lab", "../labs", "l4-path-routing/../cross-zone", "__pycache__"):
        with pytest.raises(registry.UnknownLab, match="no lab"):
            registry.get(name)
    assert registry._single == {}


def copy_lab(tmp_path: Path, slug: str = "lying-health-check") -> Path:
    dest = tmp_path / "catalog" / "my-lab"
    shutil.copytree(CATALOG / slug, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_incomplete_lab_lists_every_problem(tmp_path):
    folder = copy_lab(tmp_path)
    (folder / "solution.md").unlink()
    original = (folder / "lab.yaml").read_text()
    text = original.replace("at: 1s", "at: 99s").replace("backend: b2", "backend: b9")
    (folder / "lab.yaml").write_text(text)
    (folder / "topology.yaml").write_text((folder / "topology.yaml").read_text()
                                          .replace("interval: 300ms", "interval: 300"))
    lab, problems = definition.load(folder)
    assert lab is None
    text = "\n".join(problems)
    assert "solution.md: missing" in text
    assert "faults[0].backend: 'b9' is not a backend" in text
    assert "faults[0].at: 99s is after the traffic ends" in text
    assert "topology.yaml: pools.web.health.interval: a duration needs a unit" in text
    (folder / "lab.yaml").write_text(original.replace("title: The lying health check\n", ""))
    _, problems = definition.load(folder)
    assert "lab.yaml: title: Field required" in problems


def test_broken_grader_and_unknown_keys(tmp_path):
    folder = copy_lab(tmp_path)
    (folder / "grader.py").write_text("def grade(:\n")
    (folder / "lab.yaml").write_text((folder / "lab.yaml").read_text() + "colour: blue\n")
    _, problems = definition.load(folder)
    assert any(p.startswith("grader.py: cannot be imported: SyntaxError") for p in problems)
    assert "lab.yaml: colour: unknown key" in problems


def test_system_check_refuses_an_incomplete_lab(tmp_path, monkeypatch):
    folder = copy_lab(tmp_path)
    (folder / "grader.py").unlink()
    monkeypatch.setattr(registry, "_folders", lambda root=None: [folder])
    try:
        errors = [e for e in checks.run_checks() if e.id == "labs.E001"]
        assert errors and "lab my-lab: grader.py: missing" in errors[0].msg
        assert registry.all_labs() == []  # left out, not crashing the site
    finally:
        monkeypatch.undo()
        registry.reload()
    assert not [e for e in checks.run_checks() if e.id == "labs.E001"]


def test_learner_document_problems_have_paths():
    from labs.framework.runner import RunRefused, check_document, parse_document

    lab = registry.get("sticky-hot-spot")
    doc = parse_document(lab.topology_text().replace("sessions: memory", "sessions: disk")
                         .replace("algorithm: round_robin", "algorithm: round_robbin")
                         .replace("name: b4", "name: b9"))
    with pytest.raises(RunRefused) as err:
        check_document(lab, doc)
    assert err.value.status == 400
    paths = {e["path"]: e["message"] for e in err.value.errors}
    assert "unknown algorithm 'round_robbin'" in paths["pools.web.balancer.algorithm"]
    assert paths["lab.sessions"].startswith("choose one of memory, redis")
    assert "nothing answers behind 'b9'" in paths["pools.web.backends[3].name"]
    with pytest.raises(RunRefused) as err:
        parse_document("listeners: [\n")
    assert "not valid YAML" in str(err.value)


def test_answers_are_checked_against_the_choices():
    lab = registry.get("502-503-504")
    problems = definition.check_answers(lab.spec.answer, {"A": {"status": 418, "colour": 1},
                                                          "Z": {}})
    text = "; ".join(f"{p}: {m}" for p, m in problems)
    assert "lab.answers.A.status: choose one of 500, 502, 503, 504" in text
    assert "lab.answers.A.colour: unknown field" in text
    assert "lab.answers.Z: no such incident" in text
    assert definition.check_answers(lab.spec.answer, {"A": {"status": "?"}}) == []


def test_learner_configs_name_lab_pki_files_only():
    from labs.framework.runner import RunRefused, check_document, parse_document

    lab = registry.get("sni-mismatch")
    text = lab.topology_text().replace("{pki: www.lab.test}", "{cert: /etc/passwd, key: x.key}")
    with pytest.raises(RunRefused) as err:
        check_document(lab, parse_document(text))
    assert [e["path"] for e in err.value.errors] == ["listeners.web.tls.certificates[0].cert",
                                                     "listeners.web.tls.certificates[0].key"]


def test_lab_settings_with_limits_and_backend_knobs_say_what_to_change():
    from labs.framework.runner import RunRefused, check_document, parse_document

    lab = registry.get("retry-storm")
    assert lab.spec.lab_settings["overload"].backend_knob == "shed"
    doc = parse_document(lab.topology_text()
                         .replace("retries: 3, backoff_ms: 0", "retries: 50, backoff_ms: 0")
                         .replace("overload: reset", "overload: drop"))
    with pytest.raises(RunRefused) as err:
        check_document(lab, doc)
    paths = {e["path"]: e["message"] for e in err.value.errors}
    assert paths["lab.clients.retries"] == "must be from 0 to 10, got 50"
    assert paths["lab.overload"].startswith("choose one of reset, 429, 503")
    config, settings = check_document(lab, parse_document(lab.solution_text()))
    assert settings["overload"] == 429 and settings["clients"]["honor_retry_after"] is True
    with pytest.raises(ValueError, match="backend_knob: unknown fault knob 'shedding'"):
        definition.LabSetting(help="x", default="reset", backend_knob="shedding")


def test_a_canary_rule_out_of_bounds_is_refused_before_the_run():
    from labs.framework.runner import RunRefused, check_document, parse_document

    lab = registry.get("canary-rollback")
    doc = parse_document(lab.topology_text().replace("max_error_rate: 0.6 ",
                                                     "max_error_rate: 50 "))
    with pytest.raises(RunRefused) as err:
        check_document(lab, doc)
    assert {e["path"]: e["message"] for e in err.value.errors} == {
        "lab.canary.max_error_rate": "must be from 0 to 1, got 50"}
