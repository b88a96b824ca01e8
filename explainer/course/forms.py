"""Shapes of what the course's pages post (CSRF is checked by the middleware).

Meaning is checked in the services: whether a check answer is right, whether rubric
points belong to the drill, what a prediction scores.
"""
from __future__ import annotations

from django import forms

from explainer.course.content import Drill, Exercise
from explainer.course.services.progress import MAX_ANSWER


class DrillAnswerForm(forms.Form):
    answer = forms.CharField(max_length=MAX_ANSWER, strip=True,
                             error_messages={"required": "write your answer first",
                                             "max_length": f"keep it under {MAX_ANSWER} characters"})


class DrillGradeForm(forms.Form):
    attempt = forms.IntegerField(min_value=1)
    points = forms.MultipleChoiceField(required=False, choices=())

    def __init__(self, drill: Drill, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["points"].choices = [(p.id, p.id) for p in drill.rubric]


class PredictionForm(forms.Form):
    """One form field per prediction slot: sequences get one select per position."""

    def __init__(self, exercise: Exercise, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.exercise = exercise
        for f in exercise.predict:
            choices = f.option_pairs()
            if f.kind == "sequence":
                for i in range(1, f.count + 1):
                    self.fields[f"{f.id}_{i}"] = forms.ChoiceField(
                        choices=choices, label=f"{f.label} #{i}",
                        error_messages={"required": f"{f.label}: choose position {i}"})
            elif f.kind == "choice":
                self.fields[f.id] = forms.ChoiceField(
                    choices=choices, label=f.label, widget=forms.RadioSelect,
                    error_messages={"required": f"{f.label}: pick one"})
            else:
                self.fields[f.id] = forms.FloatField(
                    label=f.label, min_value=0, max_value=1e6,
                    error_messages={"required": f"{f.label}: type a number",
                                    "invalid": f"{f.label}: type a number, e.g. 2 or 0.5"})

    def prediction(self) -> dict:
        data = self.cleaned_data
        out = {}
        for f in self.exercise.predict:
            if f.kind == "sequence":
                out[f.id] = [data[f"{f.id}_{i}"] for i in range(1, f.count + 1)]
            else:
                out[f.id] = data[f.id]
        return out

    def error_list(self) -> list[str]:
        return [str(m) for messages in self.errors.values() for m in messages]
