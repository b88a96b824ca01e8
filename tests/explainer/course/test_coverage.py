"""The course map's concept coverage table agrees with what the content declares.

The expected table is rebuilt here straight from the files (front matter, drills, predict
exercises, concepts.yaml and the labs registry), then compared cell by cell with the map
page a learner sees. A concept without a graded piece must say "missing", not hide.
"""
import html
import re
from pathlib import Path

import pytest
import yaml
from django.test import Client

from explainer.course import content, markdown

CONTENT = Path(content.__file__).resolve().parent / "content"

# The 29 concepts issue 15 lists, in its order.
ISSUE_15 = ["balancer-roles", "l4-vs-l7", "dsr", "alb-dns-vs-nlb-static", "round-robin",
            "weighted-rr-canary", "least-connections", "lor-least-time", "random-p2c",
            "ip-hash-nat", "rehash-consistent", "maglev", "rr-mixed-durations",
            "slow-server-p99", "health-check-window", "check-timeout-cascade",
            "liveness-readiness", "shallow-deep-checks", "healthy-threshold-flapping",
            "grace-slow-start", "passive-outlier", "cookie-stickiness-hot-user",
            "redis-sessions", "draining", "idle-timeout-uploads", "tls-modes", "sni-mismatch",
            "5xx-trace", "balancer-ha"]


def expected_from_files() -> dict[str, dict[str, set[str]]]:
    """concept -> {lesson: {url#anchor}, graded: {url}, drill: {url}} from the raw files."""
    from labs.framework import registry

    known_labs = {lab.slug for lab in registry.all_labs()}
    concepts = yaml.safe_load((CONTENT / "concepts.yaml").read_text("utf-8"))
    table = {c["id"]: {"lesson": set(), "graded": set(), "drill": set()}
             for c in concepts["concepts"]}
    for path in sorted((CONTENT / "lessons").glob("*.md")):
        meta, _ = content.split_front_matter(path.read_text("utf-8"))
        for cid, sections in (meta.get("concepts") or {}).items():
            for heading in [sections] if isinstance(sections, str) else sections:
                table[cid]["lesson"].add(
                    f"/course/lessons/{meta['slug']}/#{markdown.slugify(heading)}")
    for slug, named in concepts["labs"].items():
        for cid in named:
            if slug in known_labs:
                table[cid]["graded"].add(f"/labs/{slug}/")
    for path in sorted((CONTENT / "predict").glob("*.yaml")):
        ex = yaml.safe_load(path.read_text("utf-8"))
        for cid in ex.get("concepts", []):
            table[cid]["graded"].add(f"/course/predict/{ex['slug']}/")
    for path in sorted((CONTENT / "drills").glob("*.yaml")):
        for drill in yaml.safe_load(path.read_text("utf-8"))["drills"]:
            for cid in drill.get("concepts", []):
                table[cid]["drill"].add(f"/course/drills/{drill['slug']}/")
    return table


def shown_on_map(body: str) -> dict[str, dict[str, object]]:
    out = {}
    for cid, row in re.findall(r'<tr data-concept="([a-z0-9-]+)">(.*?)</tr>', body, re.S):
        cells = {}
        for col, missing, cell in re.findall(
                r'<td data-col="(\w+)"( class="missing")?>(.*?)</td>', row, re.S):
            cells[col] = "missing" if missing else {html.unescape(h) for h in re.findall(r'href="([^"]+)"', cell)}
            if missing:
                assert cell.strip() == "missing"
        out[cid] = cells
    return out


@pytest.fixture(scope="module")
def catalog():
    return content.load()


def test_the_29_concepts_of_issue_15_are_the_course_concepts(catalog):
    assert catalog.problems == []
    assert [c.id for c in catalog.concepts] == ISSUE_15


@pytest.mark.django_db
def test_the_map_table_matches_the_content():
    body = Client().get("/course/").content.decode()
    shown = shown_on_map(body)
    expected = expected_from_files()
    assert list(shown) == ISSUE_15
    complete = 0
    for cid, cols in expected.items():
        for col in ("lesson", "graded", "drill"):
            want = cols[col] or "missing"
            assert shown[cid][col] == want, (cid, col, shown[cid][col], want)
        complete += all(cols[c] for c in ("lesson", "graded", "drill"))
    assert f"{complete} of 29 concepts have a lesson section" in body


@pytest.mark.django_db
def test_every_concept_has_a_lesson_section_and_a_drill():
    expected = expected_from_files()
    assert [c for c, cols in expected.items() if not cols["lesson"]] == []
    assert [c for c, cols in expected.items() if not cols["drill"]] == []


@pytest.mark.django_db
def test_section_links_land_on_headings_of_the_lesson():
    client = Client()
    for cid, cols in expected_from_files().items():
        for url in cols["lesson"]:
            path, anchor = url.split("#")
            page = client.get(path).content.decode()
            assert f'id="{anchor}"' in page, (cid, url)


@pytest.mark.django_db
def test_every_lesson_links_a_lab_or_says_it_has_none(catalog):
    client = Client()
    for lesson in catalog.lessons:
        page = client.get(f"/course/lessons/{lesson.slug}/").content.decode()
        practice = page[page.index('id="practice"'):]
        links = re.findall(r'href="(/labs/[a-z0-9-]+/)"', practice)
        says_none = "No graded lab for this lesson yet" in practice
        assert bool(links) != says_none, lesson.slug
        assert links or not lesson.labs, lesson.slug


def test_a_lesson_pointing_at_a_missing_section_or_concept_is_reported(tmp_path, monkeypatch):
    for sub in ("drills", "predict", "presets"):
        (tmp_path / sub).symlink_to(CONTENT / sub)
    for name in ("concepts.yaml", "vendors.yaml"):
        (tmp_path / name).symlink_to(CONTENT / name)
    (tmp_path / "lessons").mkdir()
    text = (CONTENT / "lessons" / "05-hashing.md").read_text("utf-8")
    text = text.replace('maglev: "Maglev"', 'maglev: "Maglev tables", no-such-concept: "Maglev"')
    (tmp_path / "lessons" / "05-hashing.md").write_text(text, "utf-8")
    monkeypatch.setattr(content, "CONTENT", tmp_path)
    problems = content.load().problems
    assert any("05-hashing.md: concepts.maglev: no section '## Maglev tables'" in p for p in problems), problems
    assert any("05-hashing.md: concepts: unknown concept 'no-such-concept'" in p for p in problems), problems
