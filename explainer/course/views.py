"""Thin views: who the learner is, one service or selector call, a page or JSON."""
from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from explainer import diagrams
from explainer.course import selectors
from explainer.course.content import LEVELS, TOPICS, catalog
from explainer.course.forms import DrillAnswerForm, DrillGradeForm, PredictionForm
from explainer.course.services import predict as predict_service
from explainer.course.services import progress
from explainer.course.services import sandbox as sbx
from explainer.course.services.progress import CourseError
from explainer.learners import learner_key


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _lesson(slug: str):
    lesson = catalog().lesson(slug)
    if lesson is None:
        raise Http404(f"no lesson {slug!r}")
    return lesson


def _drill(slug: str):
    drill = catalog().drill(slug)
    if drill is None:
        raise Http404(f"no interview question {slug!r}")
    return drill


def _exercise(slug: str):
    ex = catalog().exercise(slug)
    if ex is None:
        raise Http404(f"no exercise {slug!r}")
    return ex


# ---------------------------------------------------------------- map and lessons

@require_GET
def course_map(request: HttpRequest):
    return render(request, "course/map.html", selectors.course_map(learner_key(request)))


@ensure_csrf_cookie
@require_GET
def lesson(request: HttpRequest, slug: str):
    lesson = _lesson(slug)
    key = learner_key(request)
    progress.visit_lesson(key, lesson)
    return render(request, "course/lesson.html", selectors.lesson_page(key, lesson))


@require_POST
def check_answer(request: HttpRequest, slug: str, question: str):
    lesson = _lesson(slug)
    try:
        result = progress.answer_check(learner_key(request), lesson, question,
                                       request.POST.getlist("answer"))
    except CourseError as exc:
        if _wants_json(request):
            return JsonResponse(exc.as_json(), status=exc.status)
        messages.error(request, exc.message)
        return redirect(reverse("course:lesson", kwargs={"slug": slug}) + f"#check-{question}")
    if _wants_json(request):
        return JsonResponse(selectors.check_result_json(result))
    return redirect(reverse("course:lesson", kwargs={"slug": slug}) + f"#check-{question}")


@require_POST
def live_setup(request: HttpRequest, slug: str):
    lesson = _lesson(slug)
    key = learner_key(request)
    try:
        sb, state = sbx.apply_preset(key, lesson.preset_config)
    except sbx.SandboxUnavailable as exc:
        if _wants_json(request):
            return JsonResponse(exc.as_json(), status=exc.status)
        messages.error(request, exc.message)
        return redirect(reverse("course:lesson", kwargs={"slug": slug}) + "#live")
    progress.record_live(key, lesson, sb.id)
    body = {"ok": True, "sandbox": sb.id, "proxy_url": sb.proxy_url,
            "dashboard_url": selectors.dashboard_url(sb.id),
            "diagram": diagrams.topology(state),
            "message": f"Your sandbox {sb.id} now runs this lesson's preset ({lesson.preset})."}
    if _wants_json(request):
        return JsonResponse(body)
    messages.success(request, body["message"])
    return redirect(reverse("course:lesson", kwargs={"slug": slug}) + "#live")


@require_POST
def live_send(request: HttpRequest, slug: str):
    lesson = _lesson(slug)
    try:
        return JsonResponse(sbx.send_sample(learner_key(request), lesson.live_traffic))
    except sbx.SandboxUnavailable as exc:
        return JsonResponse(exc.as_json(), status=exc.status)


@require_GET
def live_recent(request: HttpRequest, slug: str):
    _lesson(slug)
    return JsonResponse(sbx.recent(learner_key(request)))


# ---------------------------------------------------------------- drills

@require_GET
def drills(request: HttpRequest):
    level = request.GET.get("level") or None
    topic = request.GET.get("topic") or None
    if level not in (None, *LEVELS) or topic not in (None, *TOPICS):
        raise Http404("no such level or topic")
    return render(request, "course/drills.html",
                  selectors.drill_list(learner_key(request), level, topic))


@ensure_csrf_cookie
@require_GET
def drill(request: HttpRequest, slug: str):
    context = selectors.drill_page(learner_key(request), _drill(slug),
                                   fresh=request.GET.get("again") == "1")
    return render(request, "course/drill.html", context)


@require_POST
def drill_answer(request: HttpRequest, slug: str):
    drill = _drill(slug)
    form = DrillAnswerForm(request.POST)
    url = reverse("course:drill", kwargs={"slug": slug})
    if not form.is_valid():
        messages.error(request, " ".join(m for ms in form.errors.values() for m in ms))
        return redirect(url + "?again=1")
    try:
        progress.start_drill(learner_key(request), drill, form.cleaned_data["answer"])
    except CourseError as exc:
        messages.error(request, exc.message)
        return redirect(url + "?again=1")
    return redirect(url + "#model")


@require_POST
def drill_grade(request: HttpRequest, slug: str):
    drill = _drill(slug)
    form = DrillGradeForm(drill, request.POST)
    url = reverse("course:drill", kwargs={"slug": slug})
    if not form.is_valid():
        messages.error(request, "that grade could not be read; reload the page and tick again")
        return redirect(url)
    try:
        progress.grade_drill(learner_key(request), drill, form.cleaned_data["attempt"],
                             form.cleaned_data["points"])
    except CourseError as exc:
        messages.error(request, exc.message)
    return redirect(url + "#score")


# ---------------------------------------------------------------- predict then observe

@require_GET
def predict_index(request: HttpRequest):
    return render(request, "course/predict_list.html",
                  selectors.exercise_list(learner_key(request)))


@ensure_csrf_cookie
@require_GET
def predict(request: HttpRequest, slug: str):
    ex = _exercise(slug)
    run_id = request.GET.get("run")
    context = selectors.exercise_page(learner_key(request), ex,
                                      int(run_id) if run_id and run_id.isdigit() else None)
    context["form_errors"] = []
    return render(request, "course/predict.html", context)


@require_POST
def predict_run(request: HttpRequest, slug: str):
    ex = _exercise(slug)
    key = learner_key(request)
    form = PredictionForm(ex, request.POST)
    if not form.is_valid():
        context = selectors.exercise_page(key, ex)
        context["form_errors"] = form.error_list()
        context["posted"] = request.POST
        return render(request, "course/predict.html", context, status=400)
    run = predict_service.run(key, ex, form.prediction())
    if run.status == run.Status.FAILED:
        messages.error(request, run.error)
    return redirect(reverse("course:predict", kwargs={"slug": slug}) + f"?run={run.pk}#result")
