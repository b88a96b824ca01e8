"""Thin views over labs.services: validate input, call one service, render or answer JSON."""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from django.http import FileResponse, Http404, HttpRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from labs.framework import registry
from labs.framework.concepts import CONCEPTS, label as concept_label
from labs.problems import Problem
from labs.services import runs

MAX_DOCUMENT = 64 * 1024


def _lab_or_404(slug: str):
    try:
        return registry.get(slug)
    except registry.UnknownLab as exc:
        raise Http404(str(exc)) from None


def _run_or_404(request, slug: str, run_id: str):
    run = runs.run_for(runs.learner_key(request), slug, run_id)
    if run is None:
        raise Http404(f"no run {run_id} of yours for lab {slug}")
    return run


def _document(request) -> str:
    text = request.POST.get("document")
    if text is None:
        try:
            text = json.loads(request.body or b"{}").get("document")
        except (ValueError, AttributeError):
            text = None
    if not isinstance(text, str) or not text.strip():
        raise runs.RunError("send the config as 'document' (YAML text)")
    if len(text) > MAX_DOCUMENT:
        raise runs.RunError(f"the config is longer than {MAX_DOCUMENT // 1024} KiB")
    return text


def concept_choices(all_labs) -> list[dict]:
    """The concepts at least one lab declares, in the course's order, with their counts."""
    counts: dict[str, int] = {}
    for lab in all_labs:
        for slug in lab.spec.concepts:
            counts[slug] = counts.get(slug, 0) + 1
    return [{"slug": slug, "label": label, "count": counts[slug]}
            for slug, label in CONCEPTS.items() if slug in counts]


@ensure_csrf_cookie
@require_GET
def lab_list(request: HttpRequest):
    progress = runs.progress_for(runs.learner_key(request))
    all_labs = registry.all_labs()
    # ?concept=SLUG: a plain GET form, so the filter works without JavaScript and a
    # filtered list has an address to share.
    wanted = request.GET.get("concept", "").strip()
    unknown = wanted if wanted and wanted not in CONCEPTS else ""
    concept = wanted if wanted in CONCEPTS else ""
    shown = [lab for lab in all_labs if not concept or concept in lab.spec.concepts]
    labs = [{"lab": lab, "progress": progress.get(lab.slug),
             "concepts": [{"slug": c, "label": concept_label(c)} for c in lab.spec.concepts]}
            for lab in shown]
    done = sum(1 for lab in all_labs if progress.get(lab.slug) and progress[lab.slug].passed)
    return render(request, "labs/list.html", {
        "labs": labs, "done": done, "total": len(all_labs), "problems": registry.problems(),
        "concepts": concept_choices(all_labs), "concept": concept,
        "concept_label": concept_label(concept) if concept else "", "unknown": unknown})


@ensure_csrf_cookie
@require_GET
def lab_page(request: HttpRequest, slug: str):
    lab = _lab_or_404(slug)
    learner = runs.learner_key(request)
    progress = runs.progress_for(learner).get(slug)
    recent = list(runs.LabRun.objects.filter(learner=learner, slug=slug)[:8])
    document = (progress.last_document if progress and progress.last_document
                else lab.topology_text())
    context = {
        "lab": lab, "spec": lab.spec, "scale": lab.scale, "progress": progress,
        "document": document, "recent": recent,
        "answer": lab.spec.answer,
        "causes": cause_words(lab.spec.answer),
        "settings_help": {k: v.help for k, v in lab.spec.lab_settings.items()},
        "page_data": {
            "slug": slug, "scale": lab.scale.factor,
            "answer": lab.spec.answer.model_dump() if lab.spec.answer else None,
            "last_run": recent[0].id if recent else None,
            "revealed": bool(progress and progress.solution_revealed),
        },
    }
    return render(request, "labs/lab.html", context)


@require_POST
def validate(request: HttpRequest, slug: str):
    _lab_or_404(slug)
    try:
        errors = runs.validate(slug, _document(request))
    except runs.RunError as exc:
        return JsonResponse(exc.as_json(), status=exc.status)
    return JsonResponse({"ok": not errors, "errors": errors})


@require_POST
def start_run(request: HttpRequest, slug: str):
    _lab_or_404(slug)
    try:
        run = runs.start(runs.learner_key(request), slug, _document(request))
    except runs.RunError as exc:
        return JsonResponse(exc.as_json(), status=exc.status)
    return JsonResponse({"run_id": run.id, "status_url":
                         f"/labs/{slug}/runs/{run.id}/status"}, status=202)


@require_GET
def run_status(request: HttpRequest, slug: str, run_id: str):
    return JsonResponse(runs.refresh(_run_or_404(request, slug, run_id)))


@require_POST
def answers(request: HttpRequest, slug: str, run_id: str):
    run = _run_or_404(request, slug, run_id)
    try:
        data = json.loads(request.body or b"{}").get("answers")
        if data is None and request.POST.get("answers"):
            data = yaml.safe_load(request.POST["answers"])
        return JsonResponse({"result": runs.regrade(run, data or {})})
    except runs.RunError as exc:
        return JsonResponse(exc.as_json(), status=exc.status)
    except (ValueError, yaml.YAMLError) as exc:
        problem = Problem(f"the answers are not valid JSON/YAML: {exc}", path="answers")
        return JsonResponse(problem.as_json(), status=problem.status)


@require_GET
def request_trace(request: HttpRequest, slug: str, run_id: str, request_id: str):
    run = _run_or_404(request, slug, run_id)
    found = runs.request_diagram(run, request_id)
    if found is None:
        raise Http404(f"no request {request_id} in run {run_id}")
    return JsonResponse(found)


@require_POST
def solution(request: HttpRequest, slug: str):
    _lab_or_404(slug)
    found = runs.reveal_solution(runs.learner_key(request), slug)
    return JsonResponse({**found, "why_html": markdown_html(found["why"])})


def markdown_html(text: str) -> str:
    """The fix's Markdown, rendered by the course's own renderer (labs/markdown.py: it
    escapes everything, then adds only its own tags), so it reads like a lesson."""
    from labs.markdown import render

    return render(text).html


# What a tracing lab's cause words mean, from the proxy's error contract (docs/errors.md
# is rendered from the same rows). A cause that is not a proxy-made response says so.
_OTHER_CAUSES = {
    "backend-500": ("500", "--", "The backend itself answered 500: the proxy only passed it "
                    "on (no X-LBLab-Error header, proxy_error false)."),
}


def cause_words(answer) -> list[dict]:
    from proxy.errors import ERRORS

    if answer is None:
        return []
    out = []
    for code in answer.fields.get("cause") or []:
        if code in ERRORS:
            e = ERRORS[code]
            out.append({"code": code, "status": e.status, "termination": e.termination,
                        "when": e.when})
        elif code in _OTHER_CAUSES:
            status, term, when = _OTHER_CAUSES[code]
            out.append({"code": code, "status": status, "termination": term, "when": when})
    return out


def _report(request, slug: str, run_id: str, name: str, content_type: str, download: bool):
    run = _run_or_404(request, slug, run_id)
    path = Path(run.run_dir) / name
    if not path.exists():
        raise Http404("the run has no report (yet)")
    response = FileResponse(open(path, "rb"), content_type=content_type)
    if download:
        response["Content-Disposition"] = f'attachment; filename="{slug}-{run_id}-{name}"'
    return response


@require_GET
def report_html(request: HttpRequest, slug: str, run_id: str):
    return _report(request, slug, run_id, "report.html", "text/html; charset=utf-8",
                   request.GET.get("download") == "1")


@require_GET
def report_json(request: HttpRequest, slug: str, run_id: str):
    return _report(request, slug, run_id, "report.json", "application/json", True)


# ---------------------------------------------------------------- "What if I had used ...?"
# A counterfactual replay of one of the learner's runs (labs/framework/replay.py): the
# form posts here, the replay runs as its own process, the result page polls its status.

def _replay_context(request, slug: str, run_id: str) -> dict:
    from labs.framework import replay, replay_trace

    lab = _lab_or_404(slug)
    run = _run_or_404(request, slug, run_id)
    from django.urls import reverse

    ctx = {"lab": lab, "run": run, "algorithms": replay.known_algorithms(),
           "max_algorithms": replay.WEB_MAX_ALGORITHMS, "error": None, "recorded": None,
           "form_url": reverse("labs:replay", args=[slug, run_id]), "window": None}
    try:
        ctx["recorded"] = replay_trace.for_run(Path(run.run_dir)).algorithm
    except replay_trace.TraceError as exc:
        ctx["error"] = str(exc)
    return ctx


@require_http_methods(["GET", "POST"])
def replay_form(request: HttpRequest, slug: str, run_id: str):
    from django.shortcuts import redirect

    from labs.framework import replay, replay_trace
    from labs.problems import Problem
    from labs.services import rates, sandboxes

    ctx = _replay_context(request, slug, run_id)
    chosen = request.POST.getlist("algorithm") if request.method == "POST" else \
        [a for a in (ctx["recorded"], "least_outstanding_requests") if a]
    ctx["chosen"] = list(dict.fromkeys(chosen))
    if request.method == "POST" and not ctx["error"]:
        try:
            rates.check_start()  # a replay starts sandboxes, like a run
            replay_id = replay.start_background(Path(ctx["run"].run_dir), chosen,
                                                sandboxes.state_dir())
        except (replay.ReplayRefused, replay_trace.TraceError) as exc:
            ctx["error"] = str(exc)
        except Problem as exc:
            ctx["error"] = str(exc)
        else:
            return redirect("labs:replay-result", slug=slug, run_id=run_id,
                            replay_id=replay_id)
    return render(request, "labs/replay.html", ctx, status=400 if ctx["error"] and
                  request.method == "POST" else 200)


@require_GET
def replay_result(request: HttpRequest, slug: str, run_id: str, replay_id: str):
    from labs.framework import replay

    ctx = _replay_context(request, slug, run_id)
    status = replay.read(Path(ctx["run"].run_dir), replay_id)
    if status.get("state") == "missing":
        raise Http404(status["message"])
    if request.GET.get("format") == "json":
        return JsonResponse({k: v for k, v in status.items() if k != "result"})
    ctx.update(status=status, replay_id=replay_id, result=status.get("result"),
               chosen=status.get("algorithms") or [])
    if ctx["result"]:
        from labs.framework.replay_compare import page_rows

        ctx.update(page_rows(ctx["result"]))
    return render(request, "labs/replay.html", ctx)
