"""Check questions graded on the server, lesson progress, drill self-grading."""
import pytest

from explainer.course import selectors
from explainer.course.content import catalog
from explainer.course.models import CheckAnswer, DrillAttempt, LessonProgress
from explainer.course.services import progress
from explainer.course.services.progress import CourseError

pytestmark = pytest.mark.django_db
ME, OTHER = "s:learner-one", "s:learner-two"


@pytest.fixture
def lesson():
    return catalog().lesson("health-checks")


def right_values(check):
    if check.kind == "number":
        return [str(check.answer)]
    return list(check.answers)


def test_a_wrong_then_a_right_answer(lesson):
    window = lesson.check("window")  # interval 10 s x threshold 3
    result = progress.answer_check(ME, lesson, "window", ["20"])
    assert not result.correct and result.attempts == 1
    assert "interval × threshold = 30 s" in result.explanation
    assert result.answer_text == "30 s"
    result = progress.answer_check(ME, lesson, "window", ["30 s"])
    assert result.correct and result.attempts == 2 and result.checks_correct == 1
    row = CheckAnswer.objects.get(learner_key=ME, question_id="window")
    assert row.first_correct_at is not None and row.response == [30.0]
    assert window.kind == "number"


def test_choice_feedback_names_the_trap(lesson):
    result = progress.answer_check(ME, lesson, "passive", ["idle"])
    assert not result.correct
    assert any("Passive health only sees traffic" in note for note in result.feedback)


def test_lesson_done_when_every_check_was_right_once(lesson):
    for check in lesson.checks[:-1]:
        progress.answer_check(ME, lesson, check.id, right_values(check))
    assert LessonProgress.objects.get(learner_key=ME, lesson_slug=lesson.slug).status == "started"
    last = lesson.checks[-1]
    result = progress.answer_check(ME, lesson, last.id, right_values(last))
    assert result.lesson_done
    # A later wrong answer does not undo it.
    progress.answer_check(ME, lesson, last.id, ["nonsense"] if last.kind == "number" else
                          [c.id for c in last.choices if c.id not in last.answers][:1])
    p = LessonProgress.objects.get(learner_key=ME, lesson_slug=lesson.slug)
    assert p.status == "completed" and p.checks_correct == len(lesson.checks)


@pytest.mark.parametrize("qid, values, message", [
    ("window", [], "type one number"),
    ("window", ["thirty"], "is not a number"),
    ("flap", [], "pick an answer first"),
    ("flap", ["zzz"], "not one of this question's choices"),
    ("nope", ["a"], "has no question 'nope'"),
])
def test_bad_answers_are_refused_with_a_reason(lesson, qid, values, message):
    with pytest.raises(CourseError) as err:
        progress.answer_check(ME, lesson, qid, values)
    assert message in err.value.message


def test_multi_choice_needs_exactly_the_right_set():
    lesson = catalog().lesson("what-a-balancer-does")
    assert not progress.answer_check(ME, lesson, "names", ["pool", "tg"]).correct
    assert progress.answer_check(ME, lesson, "names", ["pool", "tg", "upstream"]).correct


def test_drill_write_reveal_self_grade():
    drill = catalog().drill("health-window-math")
    with pytest.raises(CourseError, match="write your answer first"):
        progress.start_drill(ME, drill, "too short")
    attempt = progress.start_drill(ME, drill, "About 35 s: three probes at 10 s, each waiting 5 s.")
    page = selectors.drill_page(ME, drill)
    assert page["stage"] == "grade" and page["attempt"].pk == attempt.pk
    ids = [p.id for p in drill.rubric]
    graded = progress.grade_drill(ME, drill, attempt.pk, ids[:2])
    assert graded.score == round(2 / len(ids), 4) and graded.points == ids[:2]
    assert selectors.drill_page(ME, drill)["stage"] == "graded"
    assert selectors.drill_page(ME, drill, fresh=True)["stage"] == "write"
    with pytest.raises(CourseError, match="not yours"):
        progress.grade_drill(OTHER, drill, attempt.pk, ids)
    with pytest.raises(CourseError, match="rubric changed"):
        progress.grade_drill(ME, drill, attempt.pk, ["made-up"])


def test_the_map_and_the_summary_show_progress(lesson):
    progress.visit_lesson(ME, lesson)
    progress.answer_check(ME, lesson, "window", ["30"])
    drill = catalog().drill("black-hole")
    attempt = progress.start_drill(ME, drill, "The failing backend has nothing in flight, so it wins.")
    progress.grade_drill(ME, drill, attempt.pk, [drill.rubric[0].id])
    course = selectors.course_map(ME)
    row = next(r for r in course["lessons"] if r["lesson"].slug == lesson.slug)
    assert row["status"] == "started" and row["correct"] == 1
    assert course["current"]["lesson"].slug == lesson.slug
    assert course["drills"]["done"] == 1
    summary = selectors.learner_summary(ME)
    assert summary["current_lesson"]["slug"] == lesson.slug
    assert summary["current_lesson"]["url"] == f"/course/lessons/{lesson.slug}/"
    assert summary["drills_graded"] == 1 and summary["lessons_total"] == len(catalog().lessons)
    # Another learner sees none of it.
    assert selectors.course_map(OTHER)["drills"]["done"] == 0
    assert selectors.learner_summary(OTHER)["current_lesson"] is None
    assert DrillAttempt.objects.filter(learner_key=OTHER).count() == 0
