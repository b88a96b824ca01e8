"""Progress per learner, and the runs they started.

A learner is ``u:<user id>`` when logged in, else ``s:<session key>`` (an anonymous
session), so a workshop works without accounts and progress survives a page reload.
The run itself lives in files (its run directory, see labs/framework/runner.py); the row
points at it and keeps what the list pages need.
"""
from django.db import models


class LabProgress(models.Model):
    learner = models.CharField(max_length=80, db_index=True)
    slug = models.CharField(max_length=64)
    attempts = models.PositiveIntegerField(default=0)
    passed = models.BooleanField(default=False)
    passed_at = models.DateTimeField(null=True, blank=True)
    best_run = models.CharField(max_length=64, blank=True)
    last_document = models.TextField(blank=True)
    solution_revealed = models.BooleanField(default=False)
    # "Show the fix" is a recorded choice: when it was made, and whether the lab was
    # first passed only after it (progress and the workshop cockpit say so).
    revealed_at = models.DateTimeField(null=True, blank=True)
    passed_after_reveal = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["learner", "slug"],
                                               name="labs_progress_once_per_lab")]

    def __str__(self) -> str:
        return f"{self.learner} {self.slug} {self.state_words}"

    @property
    def state_words(self) -> str:
        if not self.passed:
            return "open, fix shown" if self.solution_revealed else "open"
        return "passed after showing the fix" if self.passed_after_reveal else "passed"


class LabRun(models.Model):
    QUEUED, RUNNING, DONE, REFUSED, FAILED = "queued", "running", "done", "refused", "failed"
    STATES = [(s, s) for s in (QUEUED, RUNNING, DONE, REFUSED, FAILED)]

    id = models.CharField(primary_key=True, max_length=64)
    learner = models.CharField(max_length=80, db_index=True)
    slug = models.CharField(max_length=64, db_index=True)
    document = models.TextField()
    state = models.CharField(max_length=16, choices=STATES, default=QUEUED)
    passed = models.BooleanField(null=True)
    headline = models.TextField(blank=True)
    run_dir = models.CharField(max_length=500)
    sandbox_id = models.CharField(max_length=64, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    pid_start = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.slug} {self.id} {self.state}"
