"""The nine interview questions the course was built around are each a drill, and the
arithmetic in the new drills is what it says."""
import pytest

from explainer.course import content

# Issue 15's nine questions, each answered by these drills (several drills may share one).
NINE = {
    "what a balancer is and how round robin works": ["what-is-a-load-balancer",
                                                     "rr-vs-least-connections"],
    "L4 vs L7 with an example of each": ["l4-vs-l7-basics"],
    "health checks pass but users get errors": ["checks-pass-users-fail"],
    "a chat app with 10M WebSocket users": ["chat-10m-websockets"],
    "zero-downtime deploys for a stateful app that cannot use Redis": ["stateful-zero-downtime"],
    "beyond one managed balancer at 100M requests a second": ["beyond-one-balancer"],
    "500 MB uploads that fail partway": ["uploads-fail-partway"],
    "one of ten servers slow (p99 5 s) under round robin": ["one-slow-of-ten"],
    "a multiplayer game with 20-60 minute sessions": ["game-long-sessions"],
}


@pytest.fixture(scope="module")
def catalog():
    return content.load()


@pytest.mark.parametrize("question", sorted(NINE))
def test_each_interview_question_is_a_full_drill(catalog, question):
    for slug in NINE[question]:
        drill = catalog.drill(slug)
        assert drill is not None, f"{question}: no drill {slug}"
        assert len(drill.rubric) >= 4 and len(drill.model_answer) > 400, slug
        assert drill.lesson and catalog.lesson(drill.lesson), slug


def test_one_slow_of_ten_numbers():
    text = " ".join(content.load().drill("one-slow-of-ten").model_answer.split())
    # Round robin: a tenth of the requests on the slow server, so p90 and up are 5 s.
    assert "10 % of requests take 5 s" in text
    # Ten calls per page: chance that at least one is slow.
    assert f"≈ {round(100 * (1 - 0.9 ** 10))} %" in text
    # Little's law, 100 requests a second per server: 500 in flight vs 5.
    assert f"100 × 5 = {100 * 5}" in text and f"the others {round(100 * 0.05)} each" in text


def test_upload_durations():
    text = " ".join(content.load().drill("uploads-fail-partway").model_answer.split())
    assert f"about {500 // 2} s" in text and f"{round(500 / 0.5):,} s" in text


def test_chat_sizing():
    text = " ".join(content.load().drill("chat-10m-websockets").model_answer.split())
    assert f"that is {10_000_000 // 100_000} servers" in text


def test_beyond_one_balancer_sizing():
    text = " ".join(content.load().drill("beyond-one-balancer").model_answer.split())
    assert f"is {100 // 20} M each" in text
    assert f"needs {100_000_000 // 50_000:,} nodes" in text
