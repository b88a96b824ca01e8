"""Per-learner progress in the course. Content lives in files (content.py), not here.

Every row is keyed by `learner_key` (explainer.learners: "user:<pk>" or
"session:<key>") and carries `updated_at`, so other parts (a workshop's cockpit) can
find "what is this learner doing now" with one indexed query.
"""
from django.db import models


class LessonProgress(models.Model):
    """One learner in one lesson: opened, check questions right, done."""

    class Status(models.TextChoices):
        STARTED = "started", "in progress"
        COMPLETED = "completed", "done"

    learner_key = models.CharField(max_length=200, db_index=True)
    lesson_slug = models.CharField(max_length=80)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.STARTED)
    checks_correct = models.PositiveSmallIntegerField(default=0)
    checks_total = models.PositiveSmallIntegerField(default=0)
    visits = models.PositiveIntegerField(default=0)
    # The "see it live" panel: the sandbox it set up, and when.
    live_sandbox = models.CharField(max_length=64, blank=True, default="")
    live_applied_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["learner_key", "lesson_slug"],
                                               name="course_lesson_once_per_learner")]
        indexes = [models.Index(fields=["learner_key", "-updated_at"],
                                name="course_lesson_recent")]

    def __str__(self):
        return f"{self.learner_key} · {self.lesson_slug} · {self.status}"


class CheckAnswer(models.Model):
    """The latest answer to one check question (graded on the server)."""

    learner_key = models.CharField(max_length=200, db_index=True)
    lesson_slug = models.CharField(max_length=80)
    question_id = models.CharField(max_length=40)
    response = models.JSONField(default=list)  # choice ids, or [number]
    correct = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    first_correct_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["learner_key", "lesson_slug", "question_id"],
            name="course_check_once_per_learner")]


class DrillAttempt(models.Model):
    """One go at an interview question: the answer written, then the self-grade."""

    learner_key = models.CharField(max_length=200, db_index=True)
    drill_slug = models.CharField(max_length=80)
    answer = models.TextField()
    points = models.JSONField(default=list)  # rubric point ids the learner says they made
    score = models.FloatField(null=True, blank=True)  # 0..1, None until graded
    graded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["learner_key", "drill_slug", "-created_at"],
                                name="course_drill_latest")]


class PredictionRun(models.Model):
    """A prediction, the real run in the learner's sandbox, and the score."""

    class Status(models.TextChoices):
        DONE = "done", "done"
        FAILED = "failed", "failed"

    learner_key = models.CharField(max_length=200, db_index=True)
    exercise_slug = models.CharField(max_length=80)
    sandbox_id = models.CharField(max_length=64, blank=True, default="")
    prediction = models.JSONField(default=dict)  # field id -> value(s)
    observed = models.JSONField(default=dict)  # field id -> what really happened
    field_scores = models.JSONField(default=dict)  # field id -> 0..1
    score = models.FloatField(null=True, blank=True)
    evidence = models.JSONField(default=dict)  # requests / state changes, diagram source
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DONE)
    error = models.TextField(blank=True, default="")
    seconds = models.FloatField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["learner_key", "exercise_slug", "-created_at"],
                                name="course_predict_latest")]
