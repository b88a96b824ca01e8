"""A workshop: an instructor, a join code, and the learners who joined with a display name.

Learners have no account: a `Participant` is bound to a learner key (their session, see
identity.py), the same key the labs and the course store their progress under, so the
cockpit reads that progress rather than keeping a copy. What happens *in* the workshop
(joins, raised hands, sandbox starts, faults injected for everyone) is kept here as
`Activity` and `FaultInjection`/`FaultResult` rows.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone


class Workshop(models.Model):
    title = models.CharField(max_length=120)
    code = models.CharField(max_length=12, unique=True,
                            help_text="what learners type to join (upper case, no 0/O/1/I)")
    instructor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                   related_name="workshops")
    created_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Presenter mode: learners' pages show this sandbox's dashboard and follow `present_view`.
    presenting = models.BooleanField(default=False)
    present_sandbox = models.CharField(max_length=63, blank=True)
    present_view = models.JSONField(default=dict, blank=True)
    present_started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("run_workshop", "Can create and run workshops (instructor)")]

    def __str__(self) -> str:
        return f"{self.title} ({self.code})"

    @property
    def is_open(self) -> bool:
        return self.ended_at is None


class Participant(models.Model):
    class Sandbox(models.TextChoices):
        NONE = "none", "not started"
        RUNNING = "running", "running"
        STOPPED = "stopped", "stopped"
        FAILED = "failed", "failed to start"
        REFUSED = "refused", "refused: the cap is reached"

    workshop = models.ForeignKey(Workshop, on_delete=models.CASCADE, related_name="participants")
    learner_key = models.CharField(max_length=100, db_index=True)
    display_name = models.CharField(max_length=40)
    joined_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    open_pages = models.IntegerField(default=0)  # learner pages with a live WebSocket
    hand_raised_at = models.DateTimeField(null=True, blank=True)
    sandbox_id = models.CharField(max_length=63, blank=True)
    sandbox_state = models.CharField(max_length=10, choices=Sandbox.choices, default=Sandbox.NONE)
    sandbox_message = models.TextField(blank=True)

    class Meta:
        ordering = ["joined_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workshop", "learner_key"],
                                    name="workshops_one_seat_per_learner"),
            models.UniqueConstraint(Lower("display_name"), "workshop",
                                    name="workshops_display_name_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} in {self.workshop.code}"


class Activity(models.Model):
    """One line of the cockpit's feed: what a learner (or the instructor) just did."""

    class Kind(models.TextChoices):
        JOINED = "joined"
        HAND = "hand"
        SANDBOX = "sandbox"
        PROGRESS = "progress"
        FAULT = "fault"
        PRESENT = "present"
        WORKSHOP = "workshop"

    workshop = models.ForeignKey(Workshop, on_delete=models.CASCADE, related_name="activities")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="activities")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    text = models.CharField(max_length=300)
    ok = models.BooleanField(null=True, blank=True)  # True pass, False failure, None neutral
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class FaultInjection(models.Model):
    """One press of "inject for everyone": the same fault into each learner's own sandbox."""

    workshop = models.ForeignKey(Workshop, on_delete=models.CASCADE, related_name="injections")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                     null=True, blank=True, related_name="+")
    backend = models.CharField(max_length=63)
    fault = models.CharField(max_length=30)
    values = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]


class FaultResult(models.Model):
    injection = models.ForeignKey(FaultInjection, on_delete=models.CASCADE, related_name="results")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE,
                                    related_name="fault_results")
    sandbox_id = models.CharField(max_length=63, blank=True)
    ok = models.BooleanField()
    message = models.TextField()

    class Meta:
        ordering = ["participant__display_name", "id"]
