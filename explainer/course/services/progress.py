"""Progress through lessons, check questions graded on the server, drill self-grading.

A lesson is *done* when every one of its check questions has been answered right at
least once (a later wrong answer does not undo that: the learner showed they knew it).
A drill attempt is an answer the learner wrote, then the rubric points they say it
made; its score is the share of points ticked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from explainer.course.content import Check, Drill, Lesson
from explainer.course.models import CheckAnswer, DrillAttempt, LessonProgress
from labs.problems import Problem

NUMBER = re.compile(r"^\s*([-+]?\d+(?:[.,]\d+)?)\s*[A-Za-z%µ/ ]*\s*$")


class CourseError(Problem):
    """Something the learner (or a stale page) sent that cannot be used; says what to do."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message, status=status)


# ---------------------------------------------------------------- lessons

def visit_lesson(learner_key: str, lesson: Lesson) -> LessonProgress:
    """The learner opened the lesson: it is now their current one."""
    progress, _ = LessonProgress.objects.get_or_create(
        learner_key=learner_key, lesson_slug=lesson.slug,
        defaults={"checks_total": len(lesson.checks)})
    progress.visits += 1
    progress.checks_total = len(lesson.checks)
    progress.save(update_fields=["visits", "checks_total", "updated_at"])
    return progress


def record_live(learner_key: str, lesson: Lesson, sandbox_id: str) -> None:
    progress, _ = LessonProgress.objects.get_or_create(
        learner_key=learner_key, lesson_slug=lesson.slug,
        defaults={"checks_total": len(lesson.checks)})
    progress.live_sandbox = sandbox_id
    progress.live_applied_at = timezone.now()
    progress.save(update_fields=["live_sandbox", "live_applied_at", "updated_at"])


def parse_response(check: Check, values: list[str]) -> list:
    """The submitted form values as the answer's shape, or CourseError saying what is wrong."""
    values = [v for v in (values or []) if str(v).strip()]
    if check.kind == "number":
        if len(values) != 1:
            raise CourseError("type one number")
        m = NUMBER.match(values[0])
        if not m:
            raise CourseError(f"{values[0]!r} is not a number: type digits, e.g. 30 or 1.5")
        return [float(m.group(1).replace(",", "."))]
    if not values:
        raise CourseError("pick an answer first" if check.kind == "single"
                          else "tick at least one answer")
    ids = {c.id for c in check.choices}
    unknown = [v for v in values if v not in ids]
    if unknown:
        raise CourseError("that answer is not one of this question's choices; reload the page",
                          status=409)
    if check.kind == "single" and len(values) > 1:
        raise CourseError("pick one answer")
    return sorted(set(values))


def is_correct(check: Check, response: list) -> bool:
    if check.kind == "number":
        return abs(float(response[0]) - float(check.answer)) <= check.tolerance + 1e-9
    return sorted(response) == sorted(check.answers)


def answer_text(check: Check) -> str:
    if check.kind == "number":
        unit = f" {check.unit}" if check.unit else ""
        tol = f" (± {check.tolerance:g})" if check.tolerance else ""
        return f"{float(check.answer):g}{unit}{tol}"
    return "; ".join(c.text for c in check.choices if c.id in check.answers)


@dataclass
class CheckResult:
    question_id: str
    correct: bool
    explanation: str
    answer_text: str
    response: list
    feedback: list[str] = field(default_factory=list)  # notes on the choices picked
    attempts: int = 0
    checks_correct: int = 0
    checks_total: int = 0
    lesson_done: bool = False

    def to_json(self) -> dict:
        return {"ok": True, "question": self.question_id, "correct": self.correct,
                "explanation": self.explanation, "answer_text": self.answer_text,
                "response": self.response, "feedback": self.feedback,
                "attempts": self.attempts, "checks_correct": self.checks_correct,
                "checks_total": self.checks_total, "lesson_done": self.lesson_done}


def result_for(check: Check, row: CheckAnswer, progress: LessonProgress | None) -> CheckResult:
    feedback = []
    if check.kind != "number":
        for cid in row.response:
            choice = check.choice(cid)
            if choice and choice.why:
                feedback.append(choice.why)
    return CheckResult(
        question_id=check.id, correct=row.correct, explanation=check.explanation,
        answer_text=answer_text(check), response=row.response, feedback=feedback,
        attempts=row.attempts,
        checks_correct=progress.checks_correct if progress else 0,
        checks_total=progress.checks_total if progress else 0,
        lesson_done=bool(progress and progress.status == LessonProgress.Status.COMPLETED))


@transaction.atomic
def answer_check(learner_key: str, lesson: Lesson, question_id: str,
                 values: list[str]) -> CheckResult:
    check = lesson.check(question_id)
    if check is None:
        raise CourseError(f"lesson {lesson.slug!r} has no question {question_id!r}; reload the "
                          "page", status=404)
    response = parse_response(check, values)
    correct = is_correct(check, response)
    now = timezone.now()
    row, _ = CheckAnswer.objects.select_for_update().get_or_create(
        learner_key=learner_key, lesson_slug=lesson.slug, question_id=check.id)
    row.response = response
    row.correct = correct
    row.attempts += 1
    if correct and row.first_correct_at is None:
        row.first_correct_at = now
    row.save()
    progress = _recount(learner_key, lesson)
    return result_for(check, row, progress)


def _recount(learner_key: str, lesson: Lesson) -> LessonProgress:
    ids = [c.id for c in lesson.checks]
    solved = CheckAnswer.objects.filter(learner_key=learner_key, lesson_slug=lesson.slug,
                                        question_id__in=ids,
                                        first_correct_at__isnull=False).count()
    progress, _ = LessonProgress.objects.get_or_create(
        learner_key=learner_key, lesson_slug=lesson.slug,
        defaults={"checks_total": len(ids)})
    progress.checks_correct = solved
    progress.checks_total = len(ids)
    if solved >= len(ids) and progress.status != LessonProgress.Status.COMPLETED:
        progress.status = LessonProgress.Status.COMPLETED
        progress.completed_at = timezone.now()
    progress.save()
    return progress


# ---------------------------------------------------------------- drills

MIN_ANSWER = 15
MAX_ANSWER = 8000


def start_drill(learner_key: str, drill: Drill, answer: str) -> DrillAttempt:
    """Save the learner's own answer; the page then reveals the model answer and rubric."""
    text = (answer or "").strip()
    if len(text) < MIN_ANSWER:
        raise CourseError(f"write your answer first (at least a sentence, {MIN_ANSWER} "
                          "characters): the point is to commit before you see the model")
    if len(text) > MAX_ANSWER:
        raise CourseError(f"that is longer than an interview answer ({len(text)} characters; "
                          f"keep it under {MAX_ANSWER})")
    return DrillAttempt.objects.create(learner_key=learner_key, drill_slug=drill.slug,
                                       answer=text)


def grade_drill(learner_key: str, drill: Drill, attempt_id: int,
                point_ids: list[str]) -> DrillAttempt:
    """The learner ticks the rubric points their answer made; score = ticked / all."""
    attempt = DrillAttempt.objects.filter(pk=attempt_id, learner_key=learner_key,
                                          drill_slug=drill.slug).first()
    if attempt is None:
        raise CourseError("that attempt is not yours or no longer exists; write a new answer",
                          status=404)
    known = [p.id for p in drill.rubric]
    unknown = [p for p in point_ids if p not in known]
    if unknown:
        raise CourseError("the rubric changed since the page was loaded; reload it", status=409)
    chosen = [p for p in known if p in set(point_ids)]
    attempt.points = chosen
    attempt.score = round(len(chosen) / len(known), 4)
    attempt.graded_at = timezone.now()
    attempt.save(update_fields=["points", "score", "graded_at", "updated_at"])
    return attempt
