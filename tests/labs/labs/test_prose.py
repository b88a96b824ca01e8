"""A lab's hard-wrapped prose reads as paragraphs, escaped (labs/templatetags/prose.py)."""
import pytest

from labs.templatetags.prose import paragraphs, to_paragraphs


def test_single_newlines_join_and_blank_lines_split():
    text = "A chat service: every app\nholds one WebSocket.\n\nA deploy\n  cuts them.\n"
    assert to_paragraphs(text) == ["A chat service: every app holds one WebSocket.",
                                   "A deploy cuts them."]


def test_text_is_escaped():
    assert paragraphs("a <b> & c\n\nd") == "<p>a &lt;b&gt; &amp; c</p><p>d</p>"


def test_nothing_gives_nothing():
    assert paragraphs("") == "" and paragraphs(None) == ""


@pytest.mark.django_db
def test_the_lab_page_shows_the_story_without_hard_line_breaks(client, settings, tmp_path):
    settings.LBLAB_LABS_STATE_DIR = str(tmp_path)
    body = client.get("/labs/websocket-reconnect-storm/").content.decode()
    story = body.split('<section class="story">', 1)[1].split("</section>", 1)[0]
    assert "<br" not in story and story.count("<p>") >= 1
    assert "A deploy brings up a new server, b4, and deregisters b1." in story
