"""Vendor cards: every entry has a source, the cards cover what issue 15 asks for, lessons
show them, and the rendering escapes what the file says."""
import textwrap

import pytest

from explainer.course import content, markdown, selectors, vendors


@pytest.fixture(scope="module")
def cards():
    found, problems = vendors.load()
    assert problems == []
    return {c.id: c for c in found}


def test_every_card_entry_names_its_documentation(cards):
    for card in cards.values():
        for entry in card.vendors:
            assert entry.source.url.startswith("https://"), (card.id, entry.vendor)
            assert len(entry.source.title) > 5


def test_the_cards_cover_the_settings_issue_15_lists(cards):
    # health-check intervals and thresholds, deregistration delay and its maximum, idle
    # timeouts, slow start, cross-zone defaults; each card for more than one product.
    assert {"health-check-window", "draining", "idle-timeouts", "slow-start", "cross-zone"} <= set(cards)
    for card in cards.values():
        assert len(card.vendors) >= 2, card.id
    draining = {e.vendor: e for e in cards["draining"].vendors}
    assert any("3600" in d.value for d in draining["AWS ALB"].defaults)  # the maximum
    named = {e.vendor for c in cards.values() for e in c.vendors}
    assert named == set(vendors.VENDORS)


def test_each_card_is_shown_in_a_lesson(cards):
    cat = content.load()
    assert cat.problems == []
    shown = {}
    for lesson in cat.lessons:
        html = markdown.render(lesson.body, blocks={"vendors": vendors.block}).html
        for cid in cards:
            if f'aria-label="What vendors call it: {cards[cid].title}"' in html:
                shown[cid] = lesson.slug
    assert set(shown) == set(cards), shown
    assert shown["health-check-window"] == "health-checks"


def test_rendering_escapes_the_file(tmp_path):
    path = tmp_path / "vendors.yaml"
    path.write_text(textwrap.dedent("""
        cards:
          - id: xx
            concept: draining
            title: "A <b>title</b>"
            vendors:
              - vendor: HAProxy
                calls_it: "<script>alert(1)</script>"
                defaults: [{setting: "a&b", value: "<i>1</i>"}]
                note: "*fine*"
                source: {title: "Doc \\"quoted\\"", url: "https://example.org/?a=1&b=<2>"}
        """))
    found, problems = vendors.load(path)
    assert problems == []
    html = vendors.render_card(found[0])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<i>" not in html and "a&amp;b" in html and "<em>fine</em>" in html
    assert 'href="https://example.org/?a=1&amp;b=&lt;2&gt;"' in html


def test_a_card_without_a_source_or_with_a_plain_http_link_is_refused(tmp_path):
    path = tmp_path / "vendors.yaml"
    path.write_text(textwrap.dedent("""
        cards:
          - id: xx
            concept: draining
            title: Something
            vendors:
              - {vendor: HAProxy, calls_it: thing}
              - {vendor: Envoy, calls_it: thing, source: {title: Some doc, url: "http://insecure.example"}}
        """))
    found, problems = vendors.load(path)
    assert found == []
    assert any("vendors.0.source" in p and "required" in p.lower() for p in problems), problems
    assert any("vendors.1.source.url" in p for p in problems), problems


def test_a_lesson_naming_an_unknown_card_is_a_problem():
    html = markdown.render("```vendors\nno-such-card\n```", blocks={"vendors": vendors.block}).html
    assert 'class="diagram-error"' in html and "no-such-card" in html


@pytest.mark.django_db
def test_the_lesson_page_shows_the_cards(client):
    body = client.get("/course/lessons/draining-and-timeouts/").content.decode()
    assert "In the products: Draining a backend" in body
    assert "deregistration_delay.timeout_seconds" in body
    assert "In the products: Idle timeouts" in body
    assert 'class="vendor-source"' in body
