"""The shipped course content is valid, and broken content is reported with its path."""
import collections
import textwrap

import pytest

from explainer.course import content, markdown, selectors
from explainer.course.services.predict import observation_problem


@pytest.fixture(scope="module")
def catalog():
    return content.load()


def test_shipped_content_has_no_problem(catalog):
    assert catalog.problems == []
    assert len(catalog.lessons) >= 12
    assert [x.order for x in catalog.lessons] == sorted(x.order for x in catalog.lessons)


def test_every_lesson_has_answered_checks_a_valid_preset_and_renders(catalog):
    from proxy.config import parse_config

    for lesson in catalog.lessons:
        assert len(lesson.checks) >= 2, lesson.slug
        for check in lesson.checks:
            assert check.answer is not None and len(check.explanation) > 20
        parse_config(lesson.preset_config)  # the proxy's own validation
        assert content.config_problems(lesson.preset_config) == []
        rendered = markdown.render(lesson.body, lambda n, l=lesson: selectors.diagram_source(n, l))
        assert rendered.mermaid_blocks, f"{lesson.slug} has no diagram"
        assert "diagram-error" not in rendered.html
        assert rendered.toc


def test_lessons_link_labs_that_exist(catalog):
    from labs.framework import registry

    known = {lab.slug for lab in registry.all_labs()}
    linked = [slug for lesson in catalog.lessons for slug in lesson.labs]
    assert linked and set(linked) <= known


def test_generated_diagrams_come_from_the_proxy(catalog):
    from proxy.health import table

    assert selectors.diagram_source("health_table") == table.as_mermaid("health")
    lesson = catalog.lesson("health-checks")
    html = markdown.render(lesson.body, lambda n: selectors.diagram_source(n, lesson)).html
    assert 'data-diagram="health_table"' in html and "unhealthy_threshold failures" in html


def test_drills_cover_levels_and_topics(catalog):
    levels = collections.Counter(d.level for d in catalog.drills)
    assert len(catalog.drills) >= 30
    assert all(levels[lvl] >= 5 for lvl in content.LEVELS), levels
    for drill in catalog.drills:
        assert len(drill.rubric) >= 3 and drill.model_answer.strip()
        assert set(drill.topics) <= set(content.TOPICS)


def test_exercises_read_observations_their_scenario_makes(catalog):
    assert len(catalog.exercises) >= 6
    for ex in catalog.exercises:
        for f in ex.predict:
            assert observation_problem(ex, f) is None
        if ex.scenario == "simulation":  # runs a model, no proxy config
            assert ex.slug not in catalog.exercise_configs
        else:
            assert content.config_problems(catalog.exercise_configs[ex.slug]) == []


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def test_broken_files_are_reported_with_their_path_and_left_out(tmp_path, monkeypatch):
    root = tmp_path / "content"
    write(root / "lessons" / "01-bad.md", """
        ---
        slug: bad-lesson
        title: A bad lesson
        order: 1
        summary: A lesson whose check has no right answer among its choices.
        topics: [fundamentals]
        labs: [no-such-lab]
        preset: presets/broken.yaml
        preset_note: The preset has a typo in its algorithm name, refused by the proxy.
        checks:
          - id: q1
            prompt: Which one is it, really?
            choices: [{id: a, text: A}, {id: b, text: B}]
            answer: c
            explanation: Because the answer is not among the choices at all.
          - id: q2
            kind: number
            prompt: How many seconds exactly?
            answer: 3
            explanation: Three seconds, since the interval is one second.
        ---
        """)
    lesson = root / "lessons" / "01-bad.md"
    lesson.write_text(lesson.read_text() + "Body text. " * 40 + "\n```diagram\nno_such_diagram\n```\n")
    write(root / "presets" / "broken.yaml", """
        listeners: {web: {bind: 127.0.0.1:8080, routes: [all]}}
        routes: {all: {match: {}, forward: web}}
        pools: {web: {balancer: {algorithm: round_robbin}, backends: [{name: b9, address: 127.0.0.1:1}]}}
        """)
    write(root / "drills" / "x.yaml", """
        drills:
          - slug: too-short
            level: principal
            topics: [fundamentals]
            question: Why is this drill invalid?
            model_answer: short
            rubric: [{id: a, text: only one point}]
        """)
    (root / "predict").mkdir()
    monkeypatch.setattr(content, "CONTENT", root)
    catalog = content.load()
    text = "\n".join(catalog.problems)
    assert catalog.lessons == [] and catalog.drills == []
    assert "lessons/01-bad.md: checks[0]: answer must be one of the choice ids (a, b)" in text
    assert "drills/x.yaml: drills[0].level" in text
    assert "drills/x.yaml: drills[0].model_answer" in text

    # The same lesson with a valid check: now the preset, lab and diagram are checked.
    bad = (root / "lessons" / "01-bad.md").read_text().replace("answer: c", "answer: b")
    (root / "lessons" / "01-bad.md").write_text(bad)
    text = "\n".join(content.load().problems)
    assert "preset presets/broken.yaml: pools.web.balancer.algorithm: unknown algorithm 'round_robbin'" in text
    assert "diagram 'no_such_diagram' is not one the site draws" in text


def test_markdown_escapes_everything_it_did_not_write():
    out = markdown.render(textwrap.dedent("""
        ## Title <script>alert(1)</script>

        A [link](javascript:alert) and [ok](/course/) and [far](//evil.example) and <img src=x onerror=alert(1)>,
        `<b>code</b>` and **bold** *em* round_robin_name.

        | a | b |
        |---|---|
        | <i>x</i> | 2 |

        ```mermaid
        flowchart LR
          a["</pre><script>x</script>"] --> b
        ```

        > **Note** careful <u>here</u>
        """), lambda name: None)
    html = out.html
    assert "<script>" not in html and "<img" not in html and "<i>" not in html and "<u>" not in html
    assert "javascript:" not in html and "evil.example" not in html and 'href="/course/"' in html
    assert "A link and" in html  # the text stays, the link goes
    assert "<code>&lt;b&gt;code&lt;/b&gt;</code>" in html and "<strong>bold</strong>" in html
    assert "<em>em</em>" in html and "round_robin_name" in html
    assert "&lt;/pre&gt;&lt;script&gt;" in html  # inside the Mermaid source, inert
    assert '<aside class="callout callout-note">' in html
    assert out.toc == [(2, "title-script-alert-1-script", "Title <script>alert(1)</script>")]
