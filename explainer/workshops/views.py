"""Thin views: who may ask (instructor of this workshop, or this learner), one service
or selector call, then a page or JSON. Every POST goes through Django's CSRF check (the
pages send the token in X-CSRFToken); nothing here is csrf_exempt.
"""
from __future__ import annotations

import json
from functools import wraps

from django.contrib.auth import views as auth_views
from django.http import (Http404, HttpRequest, HttpResponse, HttpResponseForbidden,
                         JsonResponse)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from explainer.services import dashboard
from explainer.services.controls import FAULTS
from explainer.workshops import forms, selectors
from explainer.workshops.identity import learner_key, remember_participant
from explainer.workshops.models import Participant, Workshop
from explainer.workshops.services import sandboxes, workshops
from explainer.workshops.services.workshops import WorkshopError

LOGIN = "workshops:login"


# ---------------------------------------------------------------- access

NOT_JOINED = WorkshopError("join this workshop first", status=403, field="workshop")


def _error(exc: WorkshopError) -> JsonResponse:
    return JsonResponse(exc.as_json(), status=exc.status)


def instructor_required(view):
    """Logged in (else to the login page) and allowed to run workshops (else 403)."""
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return auth_views.redirect_to_login(request.get_full_path(), LOGIN)
        if not workshops.instructor_can_run(request.user):
            return render(request, "workshops/forbidden.html", {
                "message": f"The account {request.user.get_username()!r} is not an instructor. "
                           "An admin can make it one with: python manage.py createinstructor "
                           f"{request.user.get_username()}"}, status=403)
        return view(request, *args, **kwargs)
    return wrapper


def _own_workshop(request: HttpRequest, workshop_id: int) -> Workshop:
    workshop = selectors.instructor_workshop(request.user, workshop_id)
    if workshop is None:  # someone else's workshop looks the same as none at all
        raise Http404("no such workshop among yours")
    return workshop


def _seat(request: HttpRequest, code: str) -> tuple[Workshop, Participant | None]:
    workshop = Workshop.objects.filter(code=workshops.normalise_code(code)).first()
    if workshop is None:
        raise Http404("no workshop has this code")
    participant = workshops.participant_for(workshop, learner_key(request))
    if participant is not None:
        remember_participant(request, participant.pk)
    return workshop, participant


# ---------------------------------------------------------------- instructor: account

class LoginView(auth_views.LoginView):
    template_name = "workshops/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self):
        return reverse("workshops:list")


logout_view = auth_views.LogoutView.as_view(next_page=LOGIN)


# ---------------------------------------------------------------- instructor: pages

@ensure_csrf_cookie
@require_http_methods(["GET", "POST"])
@instructor_required
def workshop_list(request: HttpRequest):
    form = forms.WorkshopForm(request.POST or None)
    error = None
    if request.method == "POST" and form.is_valid():
        try:
            workshop = workshops.create_workshop(instructor=request.user,
                                                 title=form.cleaned_data["title"])
        except WorkshopError as exc:
            error = exc.message
        else:
            return redirect("workshops:cockpit", workshop.pk)
    return render(request, "workshops/list.html", {
        "form": form, "error": error, "workshops": selectors.workshops_for(request.user)},
        status=400 if request.method == "POST" else 200)


@ensure_csrf_cookie
@require_GET
@instructor_required
def cockpit_page(request: HttpRequest, workshop_id: int):
    workshop = _own_workshop(request, workshop_id)
    return render(request, "workshops/cockpit.html", {
        "workshop": workshop,
        "snapshot": selectors.cockpit(workshop),
        "join_url": request.build_absolute_uri(reverse("workshops:join-code",
                                                       args=[workshop.code])),
        "faults": [{"name": k, "label": v[0], "help": v[1]} for k, v in FAULTS.items()],
        "backends": sandboxes.backend_names(),
    })


@require_GET
@instructor_required
def cockpit_json(request: HttpRequest, workshop_id: int):
    return JsonResponse(selectors.cockpit(_own_workshop(request, workshop_id)))


@ensure_csrf_cookie
@require_GET
@instructor_required
def present_page(request: HttpRequest, workshop_id: int):
    workshop = _own_workshop(request, workshop_id)
    return render(request, "workshops/present.html", {
        "workshop": workshop, "present": workshops.presenter_payload(workshop)})


@require_GET
@instructor_required
def results_csv(request: HttpRequest, workshop_id: int):
    workshop = _own_workshop(request, workshop_id)
    response = HttpResponse(selectors.csv_text(workshop), content_type="text/csv; charset=utf-8")
    name = f"workshop-{workshop.code}-{slugify(workshop.title)[:40] or 'results'}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# action -> (form class, call(request, workshop, form) -> JSON-able dict)
def _present_start(request, workshop, form):
    return workshops.start_presenting(workshop, form.cleaned_data["sandbox"] or None)


def _inject(request, workshop, form):
    injection = sandboxes.inject_fault_for_all(
        workshop, user=request.user, backend=form.cleaned_data["backend"],
        fault=form.cleaned_data["fault"], values=form.values())
    data = selectors.injection_json(injection)
    return {"ok": True, "message": f"{data['label']} on {data['backend']}: done in "
            f"{data['ok']} of {data['total']} sandbox{'' if data['total'] == 1 else 'es'}.",
            "injection": data}


def _stop_sandbox(request, workshop, form):
    participant = workshop.participants.filter(pk=form.cleaned_data["participant"]).first()
    if participant is None:
        raise WorkshopError("no such learner in this workshop", status=404)
    stopped = sandboxes.stop_sandbox(participant)
    workshops.record(workshop, "sandbox", f"Instructor stopped {participant.display_name}'s "
                     "sandbox", participant)
    return {"ok": True, "message": f"Stopped {participant.display_name}'s sandbox."
            if stopped else f"{participant.display_name} had no sandbox running."}


CONTROLS = {
    "present-start": (forms.PresentForm, _present_start),
    "present-stop": (forms.ControlForm, lambda r, w, f: workshops.stop_presenting(w)),
    "present-view": (forms.ViewForm, lambda r, w, f: workshops.update_view(w, f.view())),
    "inject-fault": (forms.FaultForAllForm, _inject),
    "stop-sandbox": (forms.ParticipantForm, _stop_sandbox),
    "end": (forms.ControlForm, lambda r, w, f: workshops.end_workshop(w)),
}


@require_POST
@instructor_required
def control(request: HttpRequest, workshop_id: int, action: str):
    workshop = _own_workshop(request, workshop_id)
    if action not in CONTROLS:
        raise Http404(f"no control {action!r}")
    form_class, call = CONTROLS[action]
    form = form_class(request.POST)
    if not form.is_valid():
        return JsonResponse(form.errors_json(), status=400)
    try:
        return JsonResponse(call(request, workshop, form))
    except WorkshopError as exc:
        return _error(exc)


@require_GET
def learner_detail(request: HttpRequest, workshop_id: int, participant_id: int):
    """A learner's work: for the workshop's instructor, or for that learner only."""
    participant = (Participant.objects.select_related("workshop")
                   .filter(pk=participant_id, workshop_id=workshop_id).first())
    if participant is None:
        raise Http404("no such learner in this workshop")
    workshop = participant.workshop
    is_instructor = (request.user.is_authenticated
                     and selectors.instructor_workshop(request.user, workshop.pk) is not None)
    if not is_instructor and participant.learner_key != learner_key(request):
        return HttpResponseForbidden(render(request, "workshops/forbidden.html", {
            "message": "This page shows another learner's work. You can see only your own: "
                       "open your workshop page."}).content)
    data = selectors.learner_detail(workshop, participant)
    if request.headers.get("Accept", "").startswith("application/json"):
        return JsonResponse(data)
    return render(request, "workshops/learner_detail.html", {
        "workshop": workshop, "participant": participant, "data": data,
        "is_instructor": is_instructor})


# ---------------------------------------------------------------- learners

@ensure_csrf_cookie
@require_http_methods(["GET", "POST"])
def join(request: HttpRequest, code: str = ""):
    initial = {"code": workshops.normalise_code(code)} if code else {}
    form = forms.JoinForm(request.POST or None, initial=initial)
    error, status = None, 200
    if request.method == "POST":
        if form.is_valid():
            try:
                workshop = workshops.open_workshop(form.cleaned_data["code"])
                participant, _ = workshops.join(workshop=workshop,
                                                learner_key=learner_key(request),
                                                display_name=form.cleaned_data["display_name"])
            except WorkshopError as exc:
                error, status = exc.message, exc.status
            else:
                remember_participant(request, participant.pk)
                return redirect("workshops:learner", workshop.code)
        else:
            status = 400
    return render(request, "workshops/join.html", {"form": form, "error": error},
                  status=status)


@ensure_csrf_cookie
@require_GET
def learner_page(request: HttpRequest, code: str):
    workshop, participant = _seat(request, code)
    if participant is None:
        return redirect("workshops:join-code", workshop.code)
    sandboxes.refresh_state(participant)
    return render(request, "workshops/learner.html", {
        "workshop": workshop, "participant": participant,
        "me": selectors.learner_page(participant),
        "links_json": json.dumps(selectors.course_links())})


@require_GET
def learner_json(request: HttpRequest, code: str):
    workshop, participant = _seat(request, code)
    if participant is None:
        return _error(NOT_JOINED)
    return JsonResponse(selectors.learner_page(participant))


@require_POST
def learner_sandbox(request: HttpRequest, code: str):
    workshop, participant = _seat(request, code)
    if participant is None:
        return _error(NOT_JOINED)
    if not workshop.is_open:
        return _error(WorkshopError("this workshop has ended", status=410, field="workshop"))
    try:
        return JsonResponse(sandboxes.ensure_sandbox(participant))
    except WorkshopError as exc:
        return _error(exc)


@require_POST
def learner_hand(request: HttpRequest, code: str):
    workshop, participant = _seat(request, code)
    if participant is None:
        return _error(NOT_JOINED)
    form = forms.HandForm(request.POST)
    if not form.is_valid():
        return JsonResponse(form.errors_json(), status=400)
    participant = workshops.set_hand(participant, form.cleaned_data["raised"])
    raised = participant.hand_raised_at is not None
    return JsonResponse({"ok": True, "raised": raised,
                         "message": "Your instructor sees your raised hand." if raised
                         else "Hand lowered."})


@xframe_options_sameorigin
@ensure_csrf_cookie
@require_GET
def screen(request: HttpRequest, code: str):
    """The presented dashboard, framed inside learners' pages and the presenter page."""
    workshop = Workshop.objects.filter(code=workshops.normalise_code(code)).first()
    if workshop is None:
        raise Http404("no workshop has this code")
    is_instructor = (request.user.is_authenticated
                     and selectors.instructor_workshop(request.user, workshop.pk) is not None)
    if not is_instructor and workshops.participant_for(workshop, learner_key(request)) is None:
        return HttpResponseForbidden("join this workshop to see what the instructor presents")
    sandbox = workshop.present_sandbox
    # framed: the site's header and footer stay out of the frame (the page around it has them)
    return render(request, "explainer/dashboard.html",
                  {**dashboard.page_context(sandbox), "framed": True})
