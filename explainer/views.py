"""Thin HTTP views: check who asks, validate input, call one service, render JSON or the page.

Every view that names a sandbox goes through ``sandbox_view`` (explainer/services/
ownership.py): someone else's sandbox is a 404, the shared default one is read-only to
visitors unless LBLAB_DEFAULT_SANDBOX_WRITERS allows them. Errors a user can cause are
``Problem``s (labs/problems.py), rendered by ``problem_response``.
"""
from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from explainer import forms
from explainer.services import controls, dashboard, ownership, parts
from explainer.services.controls import ControlError
from explainer.services.ownership import sandbox_view
from explainer.services.sandboxes import SandboxError, check_id
from labs.problems import Problem


def problem_response(exc: Problem) -> JsonResponse:
    """Any Problem as JSON: {"ok": false, "error", "errors": [{path, message}]} + status."""
    response = JsonResponse(exc.as_json(), status=exc.status or 400)
    if getattr(exc, "retry_after", None):
        response["Retry-After"] = str(exc.retry_after)
    return response


def _sandbox_or_404(sandbox: str) -> str:
    try:
        return check_id(sandbox)
    except SandboxError as exc:
        raise Http404(exc.message) from None


@ensure_csrf_cookie
@require_GET
def dashboard_page(request: HttpRequest, sandbox: str | None = None):
    sandbox = _sandbox_or_404(sandbox or settings.LBLAB_SANDBOX)
    found = ownership.require(request, sandbox)
    context = dashboard.page_context(sandbox)
    context["can_change"] = found.write
    return render(request, "explainer/dashboard.html", context)


def _error(exc: Exception) -> JsonResponse:
    return problem_response(ControlError.wrap(exc))


@require_GET
@sandbox_view()
async def snapshot(request: HttpRequest, sandbox: str):
    """The WebSocket's first paint over plain HTTP (fallback when sockets are blocked)."""
    return JsonResponse(await dashboard.first_paint(_sandbox_or_404(sandbox)))


@require_GET
@sandbox_view()
async def request_diagram(request: HttpRequest, sandbox: str, request_id: str):
    try:
        data = await dashboard.request_diagram(_sandbox_or_404(sandbox), request_id)
    except Problem as exc:
        return _error(exc)
    return JsonResponse({"ok": True, **data})


@require_GET
@sandbox_view()
async def connection_diagram(request: HttpRequest, sandbox: str, connection_id: str):
    try:
        data = await dashboard.connection_diagram(_sandbox_or_404(sandbox), connection_id)
    except Problem as exc:
        return _error(exc)
    return JsonResponse({"ok": True, **data})


@require_GET
@sandbox_view()
async def connections(request: HttpRequest, sandbox: str):
    """The proxy's GET /connections (live L4 connections and tunnels), for polling pages."""
    try:
        data = await dashboard.live_connections(_sandbox_or_404(sandbox))
    except Problem as exc:
        return _error(exc)
    return JsonResponse({"ok": True, **data})


@require_GET
@sandbox_view()
async def health_diagram(request: HttpRequest, sandbox: str, pool: str, backend: str):
    try:
        data = await dashboard.health_diagram(_sandbox_or_404(sandbox), pool, backend)
    except Problem as exc:
        return _error(exc)
    return JsonResponse({"ok": True, **data})


@require_GET
@sandbox_view()
def traffic_status(request: HttpRequest, sandbox: str):
    try:
        return JsonResponse(controls.traffic_status(_sandbox_or_404(sandbox),
                                                    request.GET.get("run") or None))
    except Problem as exc:
        return problem_response(exc)


@require_GET
def part_status(request: HttpRequest, sandbox: str):
    """Which parts of the sandbox run (proxy, toy backends), since when a dead one is dead,
    and whether this visitor may restart them (the dashboard's parts panel, parts.js)."""
    sandbox = _sandbox_or_404(sandbox)
    found = ownership.require(request, sandbox)
    return JsonResponse({"ok": True, **parts.status(sandbox), "can_change": found.write})


# action -> (form class, call(sandbox, form) -> result dict)
ACTIONS = {
    "algorithm": (forms.AlgorithmForm, lambda sb, f: controls.set_algorithm(
        sb, f.cleaned_data["pool"], f.cleaned_data["algorithm"], f.options())),
    "weight": (forms.WeightForm, lambda sb, f: controls.set_weight(
        sb, f.cleaned_data["pool"], f.cleaned_data["backend"], f.cleaned_data["weight"])),
    "add-backend": (forms.AddBackendForm, lambda sb, f: controls.add_backend(
        sb, f.cleaned_data["pool"], f.cleaned_data["name"], f.cleaned_data["address"],
        f.cleaned_data["weight"])),
    "remove-backend": (forms.RemoveBackendForm, lambda sb, f: controls.remove_backend(
        sb, f.cleaned_data["pool"], f.cleaned_data["backend"], f.cleaned_data["drain"])),
    "intent": (forms.IntentForm, lambda sb, f: controls.backend_intent(
        sb, f.cleaned_data["pool"], f.cleaned_data["backend"], f.cleaned_data["verb"])),
    "health": (forms.HealthForm, lambda sb, f: controls.set_health(
        sb, f.cleaned_data["pool"], f.health())),
    "fault": (forms.FaultForm, lambda sb, f: controls.inject_fault(
        sb, f.cleaned_data["backend"], f.cleaned_data["fault"], f.values())),
    # backend: a toy backend's name, or "proxy" (the sandbox's proxy, from its config file)
    "restart": (forms.RestartForm, lambda sb, f: controls.restart_backend(
        sb, f.cleaned_data["backend"])),
    "traffic-start": (forms.TrafficStartForm, lambda sb, f: controls.start_traffic(
        sb, f.cleaned_data["profile"], f.cleaned_data["users"], f.cleaned_data["duration_s"])),
    "listener-mode": (forms.ListenerModeForm, lambda sb, f: controls.set_listener_mode(
        sb, f.cleaned_data["listener"], f.cleaned_data["protocol"], f.cleaned_data["tls"])),
    "traffic-stop": (forms.TrafficStopForm, lambda sb, f: controls.stop_traffic(
        sb, f.cleaned_data["run_id"] or None)),
}


@require_POST
@sandbox_view(write=True)
def control(request: HttpRequest, sandbox: str, action: str):
    sandbox = _sandbox_or_404(sandbox)
    if action not in ACTIONS:
        raise Http404(f"no control {action!r}")
    form_class, call = ACTIONS[action]
    form = form_class(request.POST)
    if not form.is_valid():
        return JsonResponse(form.errors_json(), status=400)
    try:
        return JsonResponse(call(sandbox, form))
    except Problem as exc:
        return problem_response(ControlError.wrap(exc))
