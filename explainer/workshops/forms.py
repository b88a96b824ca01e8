"""Shapes of what the workshop pages post; the rules live in the services."""
from __future__ import annotations

from django import forms

from explainer.forms import ControlForm, FaultForm
from explainer.workshops.services.workshops import NAME_MAX


class WorkshopForm(ControlForm):
    title = forms.CharField(max_length=120, label="Title",
                            widget=forms.TextInput(attrs={"placeholder": "e.g. Load balancing 101, Tuesday",
                                                          "autocomplete": "off"}))


class JoinForm(ControlForm):
    code = forms.CharField(max_length=20, label="Join code",
                           widget=forms.TextInput(attrs={"autocomplete": "off",
                                                         "autocapitalize": "characters",
                                                         "spellcheck": "false",
                                                         "placeholder": "ABC234"}))
    display_name = forms.CharField(max_length=NAME_MAX, label="Your name (shown to the instructor)",
                                   widget=forms.TextInput(attrs={"autocomplete": "nickname",
                                                                 "placeholder": "e.g. Ada L."}))


class HandForm(ControlForm):
    raised = forms.BooleanField(required=False)


class PresentForm(ControlForm):
    sandbox = forms.RegexField(regex=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$", required=False,
                               max_length=63, error_messages={
                                   "invalid": "sandbox: use letters, digits, '-' and '_'"})


class ViewForm(ControlForm):
    tab = forms.CharField(required=False, max_length=40)
    scroll = forms.FloatField(required=False, min_value=0, max_value=1)
    spot = forms.CharField(required=False, max_length=40)

    def view(self) -> dict:
        return {k: v for k, v in self.cleaned_data.items() if v not in (None, "")}


class FaultForAllForm(FaultForm):
    """The dashboard's fault form, aimed at every learner's sandbox instead of one."""


class ParticipantForm(ControlForm):
    participant = forms.IntegerField(min_value=1)
