"""Reading learners' lesson, drill and lab progress from the apps that own it.

The course (app label ``course``) and the labs (``labs``) store progress per learner; the
workshop never copies it. `for_learners` reads the rows of a cohort's learner keys (one
query per model, both spellings of each key, see identity.variants) and turns each row
into a `ProgressItem` the cockpit shows: what (lesson, check, drill, prediction, lab),
where (a step), whether it passed, passes and failures, and when it last changed.

What counts, per source:

* course.LessonProgress   the lesson opened; passed when completed (every check right);
                          its step is "k of n checks right";
* course.CheckAnswer      a check question: one pass when first right, each other
                          attempt a failure;
* course.DrillAttempt     an interview drill, self-graded: passed at DRILL_PASS of the
                          rubric points, failed below, open until graded;
* course.PredictionRun    predict-then-observe: passed at PREDICT_PASS, failed below;
                          a run that broke (status failed) is neither;
* labs.LabProgress        a graded lab: passed once a run passed; every other run a
                          failure; its step is the latest run (labs.LabRun) and its state,
                          marked "passed after showing the fix" (or "fix shown") when the
                          learner revealed the documented fix first.

A source whose model is missing is skipped, and one whose query fails is logged and
skipped, so the cockpit keeps showing the rest.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Callable

from django.apps import apps

from explainer.workshops.identity import variants

log = logging.getLogger("explainer.workshops")

DRILL_PASS = 0.6  # share of rubric points; the course grades drills, it sets no pass mark
PREDICT_PASS = 0.6
COURSE_KINDS = ("lesson", "drill", "predict")  # what the cockpit's "Lesson" column shows


@dataclass
class ProgressItem:
    kind: str  # lesson | check | drill | predict | lab
    key: str
    title: str
    step: str = ""
    passed: bool | None = None  # True passed, False last attempt failed, None open
    passes: int = 0
    failures: int = 0
    updated_at: datetime | None = None  # last change of any kind (what they are on now)
    passed_at: datetime | None = None
    moved_at: datetime | None = None  # last step *forward*: the "stuck" clock restarts here

    def as_json(self) -> dict:
        return {"kind": self.kind, "key": self.key, "title": self.title, "step": self.step,
                "passed": self.passed, "passes": self.passes, "failures": self.failures,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


@dataclass
class LearnerProgress:
    items: list[ProgressItem] = field(default_factory=list)

    def _latest(self, kinds: tuple[str, ...]) -> ProgressItem | None:
        chosen = [i for i in self.items if i.kind in kinds and i.updated_at]
        return max(chosen, key=lambda i: i.updated_at) if chosen else None

    @property
    def lesson(self) -> ProgressItem | None:
        return self._latest(COURSE_KINDS)

    @property
    def lab(self) -> ProgressItem | None:
        return self._latest(("lab",))

    @property
    def passes(self) -> int:
        return sum(i.passes for i in self.items)

    @property
    def failures(self) -> int:
        return sum(i.failures for i in self.items)

    @property
    def last_activity(self) -> datetime | None:
        times = [i.updated_at for i in self.items if i.updated_at]
        return max(times) if times else None


# ---------------------------------------------------------------- titles

def _catalog():
    try:
        from explainer.course.content import catalog
        return catalog()  # cached by the course itself
    except Exception as exc:  # titles are a nicety: fall back to slugs, and say why
        log.warning("course titles unavailable (%s): showing slugs", exc)
        return None


def lesson_title(slug: str) -> str:
    cat = _catalog()
    lesson = cat.lesson(slug) if cat else None
    return str(getattr(lesson, "title", None) or slug)


def drill_title(slug: str) -> str:
    cat = _catalog()
    drill = cat.drill(slug) if cat else None
    question = getattr(drill, "question", None)
    if not question:
        return slug
    question = " ".join(question.split())
    return question if len(question) <= 70 else question[:67].rstrip() + "…"


def exercise_title(slug: str) -> str:
    cat = _catalog()
    exercise = cat.exercise(slug) if cat else None
    return str(getattr(exercise, "title", None) or slug)


@lru_cache(maxsize=256)
def lab_title(slug: str) -> str:
    try:
        from labs.framework import registry
        return str(registry.get(slug).title)
    except Exception as exc:  # an unknown or broken lab still has its slug to show
        log.debug("no title for lab %s: %s", slug, exc)
        return slug


# ---------------------------------------------------------------- one row -> one item

def lesson_item(row) -> ProgressItem:
    done = row.status == "completed"
    total = row.checks_total or 0
    step = f"{row.checks_correct} of {total} checks right" if total else "reading"
    return ProgressItem(kind="lesson", key=row.lesson_slug, title=lesson_title(row.lesson_slug),
                        step="done" if done else step, passed=True if done else None,
                        passes=1 if done else 0, updated_at=row.updated_at,
                        passed_at=row.completed_at,
                        # Opening a lesson is a step forward; revisits and answers are not.
                        moved_at=row.completed_at or row.started_at)


def check_item(row) -> ProgressItem:
    solved = row.first_correct_at is not None
    passes = 1 if solved else 0
    return ProgressItem(kind="check", key=f"{row.lesson_slug}/{row.question_id}",
                        title=f"{lesson_title(row.lesson_slug)}: question {row.question_id}",
                        step="right" if row.correct else "wrong", passed=bool(row.correct),
                        passes=passes, failures=max(row.attempts - passes, 0),
                        updated_at=row.updated_at, passed_at=row.first_correct_at,
                        moved_at=row.first_correct_at)


def drill_item(row) -> ProgressItem:
    if row.score is None:
        passed, step = None, "answer written, not graded yet"
    else:
        passed, step = row.score >= DRILL_PASS, f"self-graded {row.score:.0%}"
    return ProgressItem(kind="drill", key=row.drill_slug, title=drill_title(row.drill_slug),
                        step=step, passed=passed, passes=1 if passed else 0,
                        failures=1 if passed is False else 0, updated_at=row.updated_at,
                        passed_at=row.graded_at if passed else None,
                        moved_at=row.graded_at if passed else None)


def predict_item(row) -> ProgressItem:
    if row.status != "done" or row.score is None:
        passed, step = None, f"the run broke: {row.error[:80]}" if row.error else "no score"
    else:
        passed, step = row.score >= PREDICT_PASS, f"prediction scored {row.score:.0%}"
    return ProgressItem(kind="predict", key=row.exercise_slug,
                        title=exercise_title(row.exercise_slug), step=step, passed=passed,
                        passes=1 if passed else 0, failures=1 if passed is False else 0,
                        updated_at=row.updated_at, passed_at=row.updated_at if passed else None,
                        moved_at=row.updated_at if passed else None)


def lab_step(run) -> str:
    if run is None:
        return "not run yet"
    if run.state in ("queued", "running"):
        return "a run is going now"
    if run.state == "done":
        verdict = ("could not be graded" if run.passed is None
                   else "passed" if run.passed else "did not pass")
        return f"last run {verdict}" + (f": {run.headline[:90]}" if run.headline else "")
    return f"last run {run.state}" + (f": {run.headline[:90]}" if run.headline else "")


def lab_item(row, latest_run=None) -> ProgressItem:
    passes = 1 if row.passed else 0
    failed_last = (latest_run is not None and latest_run.state == "done"
                   and latest_run.passed is False)
    passed = True if row.passed else (False if failed_last else None)
    updated = row.updated_at
    if latest_run is not None:
        ran = latest_run.finished_at or latest_run.created_at
        updated = max(updated, ran) if updated and ran else (updated or ran)
    step = f"run {row.attempts} · {lab_step(latest_run)}" if row.attempts \
        else lab_step(latest_run)
    # "Show the fix" is a recorded choice: the cockpit says when a pass came after it.
    if getattr(row, "passed_after_reveal", False):
        step = f"passed after showing the fix · {step}"
    elif getattr(row, "solution_revealed", False) and not row.passed:
        step = f"fix shown · {step}"
    return ProgressItem(kind="lab", key=row.slug, title=lab_title(row.slug),
                        step=step,
                        passed=passed, passes=passes,
                        failures=max(row.attempts - passes, 0) if row.attempts else 0,
                        updated_at=updated, passed_at=row.passed_at, moved_at=row.passed_at)


@dataclass(frozen=True)
class Source:
    model: str  # "app_label.ModelName"
    key_field: str
    item: Callable


SOURCES = (
    Source("course.LessonProgress", "learner_key", lesson_item),
    Source("course.CheckAnswer", "learner_key", check_item),
    Source("course.DrillAttempt", "learner_key", drill_item),
    Source("course.PredictionRun", "learner_key", predict_item),
    Source("labs.LabProgress", "learner", lab_item),
)
LAB_RUNS = ("labs.LabRun", "learner")


def _model(label: str):
    try:
        return apps.get_model(label)
    except LookupError:
        return None


def models_with_keys() -> list[tuple[type, str]]:
    """(model, its learner field) of every installed source, lab runs included."""
    out = []
    for label, key_field in [(s.model, s.key_field) for s in SOURCES] + [LAB_RUNS]:
        model = _model(label)
        if model is not None:
            out.append((model, key_field))
    return out


def source_for(model) -> Source | None:
    return next((s for s in SOURCES if s.model == model._meta.label), None)


def _latest_runs(spellings: dict[str, str]) -> dict[tuple[str, str], object]:
    model = _model(LAB_RUNS[0])
    if model is None:
        return {}
    latest: dict[tuple[str, str], object] = {}
    for run in model.objects.filter(learner__in=list(spellings)).order_by("-created_at"):
        latest.setdefault((spellings[run.learner], run.slug), run)
    return latest


def for_learners(keys: list[str]) -> dict[str, LearnerProgress]:
    """learner key -> their progress across the course and the labs."""
    out = {key: LearnerProgress() for key in keys}
    spellings = {v: key for key in keys for v in variants(key)}
    if not spellings:
        return out
    try:
        runs = _latest_runs(spellings)
    except Exception as exc:  # e.g. the table is not migrated yet: show the rest
        log.warning("cannot read lab runs: %s", exc)
        runs = {}
    for source in SOURCES:
        model = _model(source.model)
        if model is None:
            continue
        try:
            rows = list(model.objects.filter(**{f"{source.key_field}__in": list(spellings)}))
            for row in rows:
                key = spellings[getattr(row, source.key_field)]
                if source.model == "labs.LabProgress":
                    item = lab_item(row, runs.get((key, row.slug)))
                else:
                    item = source.item(row)
                out[key].items.append(item)
        except Exception as exc:  # a changed model must not take the cockpit down
            log.warning("cannot read progress from %s: %s", source.model, exc)
    return out


def for_learner(key: str) -> LearnerProgress:
    return for_learners([key])[key]
