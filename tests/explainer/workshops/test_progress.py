"""Lesson, drill and lab progress of the course and the labs, as the cockpit shows it."""
from datetime import timedelta

import pytest
from django.apps import apps
from django.db import connection
from django.utils import timezone

from explainer.workshops import progress, selectors
from explainer.workshops.identity import labs_key
from explainer.workshops.models import Participant
from explainer.workshops.services import workshops

pytestmark = pytest.mark.django_db

KEY = "session:prog-ada"


def model(label):
    found = apps.get_model(label)
    assert found._meta.db_table in connection.introspection.table_names(), \
        f"{label} has no table: its app needs a migration"
    return found


@pytest.fixture
def ada(workshop):
    participant, _ = workshops.join(workshop=workshop, learner_key=KEY, display_name="Ada")
    return participant


def test_lesson_checks_and_drills(ada, workshop):
    Lesson, Check, Drill = (model("course.LessonProgress"), model("course.CheckAnswer"),
                            model("course.DrillAttempt"))
    Lesson.objects.create(learner_key=KEY, lesson_slug="round-robin", checks_correct=1,
                          checks_total=3)
    Check.objects.create(learner_key=KEY, lesson_slug="round-robin", question_id="q1",
                         correct=True, attempts=3, first_correct_at=timezone.now())
    Drill.objects.create(learner_key=KEY, drill_slug="what-is-l4", answer="a long answer here",
                         score=0.25, graded_at=timezone.now())
    prog = progress.for_learner(KEY)
    kinds = sorted(i.kind for i in prog.items)
    assert kinds == ["check", "drill", "lesson"]
    assert prog.passes == 1 and prog.failures == 3  # check: 1 right of 3; drill 25% failed
    row = selectors.cockpit(workshop)["learners"][0]
    assert row["passes"] == 1 and row["failures"] == 3
    assert row["lesson"]["kind"] in ("lesson", "drill")
    lesson = next(i for i in prog.items if i.kind == "lesson")
    assert lesson.step == "1 of 3 checks right" and lesson.passed is None
    # The cockpit heard each save as it happened.
    texts = list(workshop.activities.values_list("text", flat=True))
    assert any(t.startswith("Ada opened the lesson") for t in texts)
    assert any(t.startswith("Ada answered a check") and t.endswith("right") for t in texts)
    assert any(t.startswith("Ada failed the drill") for t in texts)


def test_stuck_restarts_on_steps_forward_not_on_failures(ada, workshop):
    Lesson, Check = model("course.LessonProgress"), model("course.CheckAnswer")
    now = timezone.now()
    Participant.objects.filter(pk=ada.pk).update(joined_at=now - timedelta(minutes=20))
    ada.refresh_from_db()
    row = Lesson.objects.create(learner_key=KEY, lesson_slug="health", checks_total=2)
    Lesson.objects.filter(pk=row.pk).update(started_at=now - timedelta(minutes=10))
    # Opening the lesson ten minutes ago moved the learner on: stuck since then.
    assert selectors.stuck_since(ada, progress.for_learner(KEY)) == now - timedelta(minutes=10)
    # A wrong answer now (which also touches the lesson row) does not restart the clock.
    Check.objects.create(learner_key=KEY, lesson_slug="health", question_id="q1",
                         correct=False, attempts=1)
    Lesson.objects.filter(pk=row.pk).update(updated_at=timezone.now())
    assert selectors.stuck_since(ada, progress.for_learner(KEY)) == now - timedelta(minutes=10)
    assert workshop.activities.filter(text__endswith=": wrong", ok=False).count() == 1
    # Completing it does.
    row.refresh_from_db()
    row.status, row.completed_at = "completed", timezone.now()
    row.save()
    assert selectors.stuck_since(ada, progress.for_learner(KEY)) >= now
    assert workshop.activities.filter(text__startswith="Ada completed the lesson", ok=True).exists()


def test_lab_progress_uses_the_labs_spelling_of_the_learner(ada, workshop):
    LabProgress, LabRun = model("labs.LabProgress"), model("labs.LabRun")
    learner = labs_key(KEY)
    LabProgress.objects.create(learner=learner, slug="sticky-hot-spot", attempts=2)
    run = LabRun.objects.create(id="r1", learner=learner, slug="sticky-hot-spot", document="x",
                                state="running", run_dir="/nonexistent")
    item = progress.for_learner(KEY).lab
    assert item.kind == "lab" and item.step.startswith("run 2 · a run is going now")
    assert item.failures == 2 and item.passed is None
    assert workshop.activities.filter(text__startswith="Ada started a run of the lab").exists()
    run.state, run.passed, run.headline = "done", False, "p99 was 900 ms, target 300 ms"
    run.finished_at = timezone.now()
    run.save()
    item = progress.for_learner(KEY).lab
    assert item.passed is False and "did not pass: p99 was 900 ms" in item.step
    line = workshop.activities.filter(text__contains="did not pass").first()
    assert line is not None and line.ok is False
    LabProgress.objects.filter(learner=learner).update(passed=True, passed_at=timezone.now())
    item = progress.for_learner(KEY).lab
    assert item.passed is True and item.passes == 1 and item.failures == 1


def test_other_learners_rows_stay_out(ada, workshop):
    Lesson = model("course.LessonProgress")
    Lesson.objects.create(learner_key="session:someone-else", lesson_slug="x", checks_total=1)
    assert progress.for_learner(KEY).items == []
    assert not workshop.activities.filter(text__contains="someone").exists()
