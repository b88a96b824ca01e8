"""Server-side validation of the dashboard's controls.

The forms check shape only (a number is a number, a choice is on the menu).
Rules about load balancing (weight 0..1000, thresholds, durations like
"200ms") are the proxy's: it refuses a bad value itself, with the path and
message the page then shows, so the learner reads the real system's words.
"""
from __future__ import annotations

from django import forms

from explainer import selectors
from explainer.services.controls import FAULTS, TRAFFIC_PROFILES
from labs.problems import Problem

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
NAME_HELP = "letters, digits, '.', '_' and '-' (start with a letter or digit)"


def name_field(label: str) -> forms.RegexField:
    return forms.RegexField(regex=NAME_PATTERN, max_length=63, label=label,
                            error_messages={"invalid": f"{label}: use {NAME_HELP}"})


class ControlForm(forms.Form):
    def errors_json(self) -> dict:
        errors = [{"path": field if field != "__all__" else "", "message": str(message)}
                  for field, messages in self.errors.items() for message in messages]
        first = errors[0]["message"] if errors else "invalid input"
        return Problem(f"check the form: {first}", errors).as_json()


class AlgorithmForm(ControlForm):
    pool = name_field("pool")
    algorithm = forms.ChoiceField(choices=())
    hash_source = forms.ChoiceField(required=False, choices=[
        ("", "(default)"), ("client_ip", "client IP"), ("header", "header"),
        ("cookie", "cookie"), ("uri", "URI")])
    hash_name = forms.CharField(required=False, max_length=100)
    choices = forms.IntegerField(required=False)
    table_size = forms.IntegerField(required=False)
    virtual_nodes = forms.IntegerField(required=False)
    load_factor = forms.FloatField(required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["algorithm"].choices = [(a, a) for a in selectors.algorithms()]

    def options(self) -> dict:
        data = self.cleaned_data
        out = {}
        if data.get("hash_source"):
            key = {"source": data["hash_source"]}
            if data.get("hash_name"):
                key["name"] = data["hash_name"]
            out["hash_key"] = key
        for name in ("choices", "table_size", "virtual_nodes", "load_factor"):
            if data.get(name) is not None:
                out[name] = data[name]
        return out


class WeightForm(ControlForm):
    pool = name_field("pool")
    backend = name_field("backend")
    weight = forms.IntegerField()  # range checked by the proxy (0..1000)


class AddBackendForm(ControlForm):
    pool = name_field("pool")
    name = forms.CharField(max_length=100)  # name rules checked by the proxy
    address = forms.CharField(max_length=200)
    weight = forms.IntegerField(initial=1)


class RemoveBackendForm(ControlForm):
    pool = name_field("pool")
    backend = name_field("backend")
    drain = forms.BooleanField(required=False)


class IntentForm(ControlForm):
    pool = name_field("pool")
    backend = name_field("backend")
    verb = forms.ChoiceField(choices=[("drain", "drain"), ("maintenance", "maintenance"),
                                      ("activate", "activate")])


class HealthForm(ControlForm):
    pool = name_field("pool")
    enabled = forms.BooleanField(required=False)
    type = forms.ChoiceField(choices=[("http", "HTTP"), ("tcp", "TCP connect")], required=False)
    path = forms.CharField(max_length=200, required=False)
    interval = forms.CharField(max_length=20, required=False)  # "200ms", "1s": the proxy parses
    timeout = forms.CharField(max_length=20, required=False)
    healthy_threshold = forms.IntegerField(required=False)
    unhealthy_threshold = forms.IntegerField(required=False)

    def clean(self):
        data = super().clean()
        if data.get("enabled"):
            for field in ("interval", "timeout", "healthy_threshold", "unhealthy_threshold"):
                if data.get(field) in (None, ""):
                    self.add_error(field, f"{field} is needed when health checks are on")
        return data

    def health(self) -> dict | None:
        data = self.cleaned_data
        if not data.get("enabled"):
            return None
        health = {k: data[k] for k in ("type", "path", "interval", "timeout",
                                        "healthy_threshold", "unhealthy_threshold")
                  if data.get(k) not in (None, "")}
        return health


class FaultForm(ControlForm):
    backend = name_field("backend")
    fault = forms.ChoiceField(choices=[(k, v[0]) for k, v in FAULTS.items()])
    latency_ms = forms.FloatField(required=False, min_value=0)
    jitter_ms = forms.FloatField(required=False, min_value=0)
    error_rate = forms.FloatField(required=False, min_value=0, max_value=1)
    error_status = forms.IntegerField(required=False, min_value=400, max_value=599)
    warmup_s = forms.FloatField(required=False, min_value=0)
    rate = forms.FloatField(required=False, min_value=0, max_value=1)

    def values(self) -> dict:
        out = {}
        for key in ("latency_ms", "jitter_ms", "error_rate", "error_status", "warmup_s", "rate"):
            value = self.cleaned_data.get(key)
            if value is not None:
                # Whole numbers stay ints: the toy backend's messages read better.
                out[key] = int(value) if isinstance(value, float) and value.is_integer() \
                    and key not in ("error_rate", "rate") else value
        return out


class RestartForm(ControlForm):
    backend = name_field("backend")


class TrafficStartForm(ControlForm):
    profile = forms.ChoiceField(choices=[(k, v) for k, v in TRAFFIC_PROFILES.items()])
    users = forms.IntegerField(min_value=1, max_value=500, initial=10)
    duration_s = forms.IntegerField(min_value=1, max_value=3600, initial=60)


class TrafficStopForm(ControlForm):
    run_id = forms.CharField(required=False, max_length=100)


class ListenerModeForm(ControlForm):
    listener = name_field("listener")
    protocol = forms.ChoiceField(choices=[("http", "L7 (HTTP)"), ("tcp", "L4 (TCP)")])
    tls = forms.ChoiceField(choices=[("none", "no TLS"), ("terminate", "terminate"),
                                     ("passthrough", "passthrough")])
