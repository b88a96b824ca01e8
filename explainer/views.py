"""Thin HTTP views: check who asks, validate input, call one service, render JSON or the page.

Every view that names a sandbox goes through ``sandbox_view`` (explainer/services/
ownership.py): someone else's sandbox is a 404, the shared default one is read-only to
visitors unless LBLAB_DEFAULT_SANDBOX_WRITERS allows them. Errors a user can cause are
``Problem``s (labs/problems.py), rendered by ``problem_response``.
"""
from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from explainer import forms
from explainer.services import controls, dashboard, ownership, parts, window_replay
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


# ---------------------------------------------------------------- "What if?" for a window
# The lab result's side-by-side replay page (labs/templates/labs/replay.html), fed a
# window of this dashboard's traffic (explainer/services/window_replay.py).

def _window_context(request, sandbox: str, write: bool) -> dict:
    from labs.framework import replay, replay_window

    found = ownership.require(request, sandbox)  # 404 for anyone else's sandbox
    dashboard_url = ("/" if sandbox == settings.LBLAB_SANDBOX else
                     reverse("explainer:sandbox-dashboard", args=[sandbox]))
    return {"algorithms": replay.known_algorithms(), "max_algorithms": replay.WEB_MAX_ALGORITHMS,
            "error": None if found.write or not write else
            "This shared sandbox is read-only for visitors: replay a window of your own sandbox.",
            "recorded": None, "form_url": reverse("explainer:replay-window", args=[sandbox]),
            "window": {"sandbox": sandbox, "dashboard_url": dashboard_url,
                       "min_s": replay_window.MIN_WINDOW_S, "max_s": replay_window.MAX_WINDOW_S,
                       "min_requests": replay_window.MIN_REQUESTS,
                       "seconds_asked": window_replay.DEFAULT_SECONDS},
            "can_change": found.write}


@require_http_methods(["GET", "POST"])
def replay_window_form(request: HttpRequest, sandbox: str):
    sandbox = _sandbox_or_404(sandbox)
    ctx = _window_context(request, sandbox, write=request.method == "POST")
    ctx["recorded"] = window_replay.current_algorithm(sandbox)
    chosen = (request.POST.getlist("algorithm") if request.method == "POST" else
              [a for a in (ctx["recorded"], "least_outstanding_requests") if a])
    # The pool's own algorithm first when it is chosen: the baseline the others diverge from.
    chosen = sorted(dict.fromkeys(chosen), key=lambda a: a != ctx["recorded"])
    ctx["chosen"] = chosen
    if request.method == "POST" and not ctx["error"]:
        ctx["window"]["seconds_asked"] = request.POST.get("seconds") or ""
        try:
            window_id, replay_id = window_replay.start(sandbox, request.POST.get("seconds"),
                                                       chosen)
        except Problem as exc:
            ctx["error"] = exc.message
        else:
            return redirect("explainer:replay-window-result", sandbox=sandbox,
                            window_id=window_id, replay_id=replay_id)
    status = 400 if ctx["error"] and request.method == "POST" else 200
    if ctx["error"] and not ctx["can_change"]:
        status = 403
    return render(request, "labs/replay.html", ctx, status=status)


@require_GET
def replay_window_result(request: HttpRequest, sandbox: str, window_id: str, replay_id: str):
    from labs.framework.replay_compare import page_rows

    sandbox = _sandbox_or_404(sandbox)
    ctx = _window_context(request, sandbox, write=False)
    status = window_replay.status(sandbox, window_id, replay_id)
    if status.get("state") == "missing":
        raise Http404(status["message"])
    if request.GET.get("format") == "json":
        return JsonResponse({k: v for k, v in status.items() if k != "result"})
    trace = status.get("trace") or {}
    ctx["window"].update(requests=trace.get("requests"), seconds=trace.get("seconds"))
    ctx.update(status=status, replay_id=replay_id, result=status.get("result"),
               chosen=status.get("algorithms") or [], recorded=trace.get("algorithm"))
    if ctx["result"]:
        ctx.update(page_rows(ctx["result"]))
    return render(request, "labs/replay.html", ctx)
