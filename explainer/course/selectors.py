"""Read-only views of the course for pages (and for other apps: see learner_summary)."""
from __future__ import annotations

import yaml
from django.db.models import Avg, Max
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import mark_safe

from explainer import diagrams
from explainer.course import coverage, markdown, vendors
from explainer.course.content import LEVELS, TOPICS, Drill, Exercise, Lesson, catalog, graded_labs
from explainer.course.models import CheckAnswer, DrillAttempt, LessonProgress, PredictionRun
from explainer.course.services import progress as progress_service
from explainer.course.services import sandbox as sbx

LEVEL_LABELS = {"junior": "Junior", "mid": "Mid-level", "senior": "Senior", "staff": "Staff"}


# ---------------------------------------------------------------- diagrams

def preset_state(config: dict) -> dict:
    """A GET /state look-alike drawn from a config alone (nothing checked yet)."""
    pools = {}
    for name, pool in (config.get("pools") or {}).items():
        pool = pool or {}
        backends = []
        for b in pool.get("backends") or []:
            intent = b.get("state", "active")
            backends.append({"name": b.get("name"), "address": b.get("address", ""),
                             "weight": b.get("weight", 1), "health": "initial",
                             "intent": intent, "eligible": intent == "active"})
        pools[name] = {"algorithm": (pool.get("balancer") or {}).get("algorithm", "round_robin"),
                       "sticky": pool.get("sticky"), "backends": backends}
    return {"listeners": config.get("listeners") or {}, "routes": config.get("routes") or {},
            "pools": pools}


def diagram_source(name: str, lesson: Lesson | None = None) -> str | None:
    from proxy.health import table

    if name == "health_table":
        return table.as_mermaid(table.HEALTH)
    if name == "ejection_table":
        return table.as_mermaid(table.EJECTION)
    if name == "intent_table":
        return table.as_mermaid(table.INTENT)
    if name == "lifecycle":
        return table.as_mermaid()
    if name == "preset_topology" and lesson is not None:
        return diagrams.topology(preset_state(lesson.preset_config))
    return None


# ---------------------------------------------------------------- links

def lab_links(slugs: list[str]) -> list[dict]:
    try:
        from labs.framework import registry
    except ImportError:
        registry = None
    links = []
    for slug in slugs:
        title = slug.replace("-", " ")
        if registry is not None:
            try:
                title = registry.get(slug).title
            except Exception:  # the check reports unknown labs; the page still links
                pass
        url = None
        for name in ("labs:detail", "labs:lab", "labs:show"):
            try:
                url = reverse(name, kwargs={"slug": slug})
                break
            except NoReverseMatch:
                continue
        links.append({"slug": slug, "title": title, "url": url or f"/labs/{slug}/"})
    return links


def dashboard_url(sandbox_id: str) -> str:
    return reverse("explainer:sandbox-dashboard", kwargs={"sandbox": sandbox_id})


# ---------------------------------------------------------------- map

def _lesson_rows(learner_key: str) -> list[dict]:
    cat = catalog()
    rows = {p.lesson_slug: p for p in LessonProgress.objects.filter(learner_key=learner_key)}
    out = []
    for lesson in cat.lessons:
        p = rows.get(lesson.slug)
        total = len(lesson.checks)
        correct = min(p.checks_correct, total) if p else 0
        status = "done" if p and p.status == LessonProgress.Status.COMPLETED else (
            "started" if p else "new")
        out.append({"lesson": lesson, "status": status, "correct": correct, "total": total,
                    "percent": round(100 * correct / total) if total else 0,
                    "labs": graded_labs(lesson),
                    "updated_at": p.updated_at if p else None})
    return out


def labs_summary(rows: list[dict]) -> str:
    """What the map says about graded labs, counted from the lessons (never promised)."""
    with_lab = sum(1 for r in rows if r["labs"])
    labs = len({slug for r in rows for slug in r["labs"]})
    in_all = f"{labs} lab{'s' if labs != 1 else ''} in all"
    if not with_lab:
        return "no graded lab yet"
    if with_lab == len(rows):
        return f"each also with a graded lab ({in_all})"
    return f"{with_lab} of them also with a graded lab ({in_all})"


def _latest_attempts(learner_key: str) -> dict[str, DrillAttempt]:
    latest: dict[str, DrillAttempt] = {}
    for attempt in DrillAttempt.objects.filter(learner_key=learner_key).order_by("created_at"):
        latest[attempt.drill_slug] = attempt
    return latest


def drill_stats(learner_key: str) -> dict:
    cat = catalog()
    latest = _latest_attempts(learner_key)
    graded = {s: a for s, a in latest.items() if a.score is not None}
    by_level = []
    for level in LEVELS:
        drills = [d for d in cat.drills if d.level == level]
        done = [graded[d.slug].score for d in drills if d.slug in graded]
        by_level.append({"level": level, "label": LEVEL_LABELS[level], "total": len(drills),
                         "done": len(done),
                         "average": round(100 * sum(done) / len(done)) if done else None})
    scores = [graded[d.slug].score for d in cat.drills if d.slug in graded]
    return {"total": len(cat.drills), "done": len(scores),
            "average": round(100 * sum(scores) / len(scores)) if scores else None,
            "by_level": by_level}


def predict_stats(learner_key: str) -> dict:
    cat = catalog()
    best = dict(PredictionRun.objects.filter(learner_key=learner_key,
                                             status=PredictionRun.Status.DONE)
                .values_list("exercise_slug").annotate(best=Max("score")))
    rows = [{"exercise": ex, "best": round(100 * best[ex.slug]) if best.get(ex.slug) is not None
             else None} for ex in cat.exercises]
    done = [r["best"] for r in rows if r["best"] is not None]
    return {"rows": rows, "total": len(rows), "done": len(done),
            "average": round(sum(done) / len(done)) if done else None}


def coverage_table() -> dict:
    """The concept coverage table of the course map, computed from the content."""
    from django.urls import reverse as _reverse

    from explainer.course.content import _known_labs

    cat = catalog()
    table = coverage.rows(cat, _known_labs())
    lab_index = {link["slug"]: link for link in lab_links(sorted({s for r in table for s in r.labs}))}
    out = []
    for row in table:
        out.append({
            "id": row.concept.id,
            "title": row.concept.title,
            "complete": row.complete,
            "sections": [{"title": f"{s.lesson.order}. {s.lesson.title}: {s.heading}",
                          "url": _reverse("course:lesson", args=[s.lesson.slug]) + "#" + s.anchor}
                         for s in row.sections],
            "graded": ([{"kind": "lab", "title": lab_index[slug]["title"], "url": lab_index[slug]["url"]}
                        for slug in row.labs]
                       + [{"kind": "simulation" if ex.scenario == "simulation" else "predict",
                           "title": ex.title, "url": _reverse("course:predict", args=[ex.slug])}
                          for ex in row.exercises]),
            "drills": [{"title": d.question, "url": _reverse("course:drill", args=[d.slug])}
                       for d in row.drills],
        })
    return {"rows": out, "summary": coverage.summary(table)}


def course_map(learner_key: str) -> dict:
    lessons = _lesson_rows(learner_key)
    done = sum(1 for r in lessons if r["status"] == "done")
    current = max((r for r in lessons if r["updated_at"] and r["status"] != "done"),
                  key=lambda r: r["updated_at"], default=None)
    if current is None:
        current = next((r for r in lessons if r["status"] != "done"), None)
    return {"lessons": lessons, "lessons_done": done, "lessons_total": len(lessons),
            "labs_summary": labs_summary(lessons),
            "percent": round(100 * done / len(lessons)) if lessons else 0,
            "current": current, "drills": drill_stats(learner_key),
            "predict": predict_stats(learner_key), "topics": TOPICS,
            "coverage": coverage_table(),
            "problems": catalog().problems}


# ---------------------------------------------------------------- one lesson

def lesson_page(learner_key: str, lesson: Lesson) -> dict:
    cat = catalog()
    rendered = markdown.render(lesson.body, lambda name: diagram_source(name, lesson),
                               blocks={"vendors": vendors.block})
    answers = {a.question_id: a for a in CheckAnswer.objects.filter(
        learner_key=learner_key, lesson_slug=lesson.slug)}
    progress = LessonProgress.objects.filter(learner_key=learner_key,
                                             lesson_slug=lesson.slug).first()
    checks = []
    for check in lesson.checks:
        row = answers.get(check.id)
        result = progress_service.result_for(check, row, progress) if row else None
        checks.append({
            "check": check,
            "prompt": mark_safe(markdown.render_inline(check.prompt)),
            "choices": [{"id": c.id, "text": mark_safe(markdown.render_inline(c.text)),
                         "picked": bool(row and c.id in row.response)} for c in check.choices],
            "result": result,
            "explanation": mark_safe(markdown.render(check.explanation).html),
            "answer_html": mark_safe(markdown.render_inline(result.answer_text)) if result else "",
            "number_value": (f"{row.response[0]:g}" if row and check.kind == "number"
                             and row.response else ""),
            "solved": bool(row and row.first_correct_at),
        })
    index = [x.slug for x in cat.lessons].index(lesson.slug)
    sb = sbx.find(learner_key)
    exercises = [cat.exercise(s) for s in lesson.predict if cat.exercise(s)]
    drills = [d for d in cat.drills if d.lesson == lesson.slug][:4]
    return {
        "lesson": lesson,
        "body": mark_safe(rendered.html),
        "toc": [t for t in rendered.toc if t[0] == 2],
        "checks": checks,
        "progress": progress,
        "solved": sum(1 for c in checks if c["solved"]),
        "labs": lab_links(graded_labs(lesson)),
        "exercises": exercises,
        "drills": drills,
        "prev": cat.lessons[index - 1] if index > 0 else None,
        "next": cat.lessons[index + 1] if index + 1 < len(cat.lessons) else None,
        "position": index + 1,
        "count": len(cat.lessons),
        "preset_yaml": yaml.safe_dump(lesson.preset_config, sort_keys=False),
        "preset_topology": diagrams.topology(preset_state(lesson.preset_config)),
        "preset_note": mark_safe(markdown.render(lesson.preset_note).html),
        "sandbox_id": sb.id if sb else sbx.sandbox_id_for(learner_key),
        "sandbox_running": bool(sb and sb.status == "running"),
        "dashboard_url": dashboard_url(sb.id if sb else sbx.sandbox_id_for(learner_key)),
        "topics": [TOPICS[t] for t in lesson.topics],
    }


def check_result_json(result) -> dict:
    """A graded answer for the page's script, with the explanation rendered (safe subset)."""
    data = result.to_json()
    data["explanation_html"] = markdown.render(result.explanation).html
    data["answer_html"] = markdown.render_inline(result.answer_text)
    data["feedback_html"] = [markdown.render_inline(f) for f in result.feedback]
    return data


# ---------------------------------------------------------------- drills

def drill_list(learner_key: str, level: str | None = None, topic: str | None = None) -> dict:
    cat = catalog()
    latest = _latest_attempts(learner_key)
    rows = []
    for drill in cat.drills:
        if level and drill.level != level:
            continue
        if topic and topic not in drill.topics:
            continue
        attempt = latest.get(drill.slug)
        rows.append({"drill": drill, "attempt": attempt,
                     "question": mark_safe(markdown.render_inline(drill.question)),
                     "score": round(100 * attempt.score) if attempt and attempt.score is not None
                     else None,
                     "topics": [TOPICS[t] for t in drill.topics]})
    counts = {lvl: sum(1 for d in cat.drills if d.level == lvl) for lvl in LEVELS}
    topic_counts = {t: sum(1 for d in cat.drills if t in d.topics) for t in TOPICS}
    return {"rows": rows, "level": level, "topic": topic,
            "levels": [(lvl, LEVEL_LABELS[lvl], counts[lvl]) for lvl in LEVELS],
            "topics": [(t, TOPICS[t], topic_counts[t]) for t in TOPICS if topic_counts[t]],
            "stats": drill_stats(learner_key)}


def drill_page(learner_key: str, drill: Drill, fresh: bool = False) -> dict:
    """The drill's state for this learner: write, grade (model revealed), or graded."""
    attempts = list(DrillAttempt.objects.filter(learner_key=learner_key, drill_slug=drill.slug)
                    .order_by("-created_at")[:6])
    current = attempts[0] if attempts and not fresh else None
    stage = "write" if current is None else ("grade" if current.score is None else "graded")
    cat = catalog()
    lesson = cat.lesson(drill.lesson) if drill.lesson else None
    history = [a for a in attempts if a.score is not None]
    return {
        "drill": drill, "stage": stage, "attempt": current,
        "question": mark_safe(markdown.render(drill.question).html),
        "model": mark_safe(markdown.render(drill.model_answer).html),
        "rubric": [{"id": p.id, "text": mark_safe(markdown.render_inline(p.text)),
                    "ticked": bool(current and p.id in (current.points or []))}
                   for p in drill.rubric],
        "follow_up": mark_safe(markdown.render_inline(drill.follow_up)) if drill.follow_up else "",
        "score": round(100 * current.score) if current and current.score is not None else None,
        "history": [{"when": a.created_at, "score": round(100 * a.score)} for a in history],
        "level_label": LEVEL_LABELS[drill.level],
        "topics": [TOPICS[t] for t in drill.topics],
        "lesson": lesson,
        "neighbours": _neighbours(cat.drills, drill),
    }


def _neighbours(drills: list[Drill], drill: Drill) -> dict:
    slugs = [d.slug for d in drills]
    i = slugs.index(drill.slug)
    return {"prev": drills[i - 1] if i > 0 else None,
            "next": drills[i + 1] if i + 1 < len(drills) else None}


# ---------------------------------------------------------------- predict

def exercise_list(learner_key: str) -> dict:
    stats = predict_stats(learner_key)
    return {"rows": [{**r, "summary": mark_safe(markdown.render_inline(r["exercise"].summary)),
                      "level_label": LEVEL_LABELS[r["exercise"].level],
                      "topic": TOPICS[r["exercise"].topic]} for r in stats["rows"]],
            "stats": stats}


def exercise_page(learner_key: str, ex: Exercise, run_id: int | None = None) -> dict:
    from explainer.course.services.predict import config_of

    runs = list(PredictionRun.objects.filter(learner_key=learner_key, exercise_slug=ex.slug)
                .order_by("-created_at")[:8])
    run = next((r for r in runs if r.pk == run_id), None) if run_id else (runs[0] if runs else None)
    cat = catalog()
    config = config_of(ex)
    fields = []
    for f in ex.predict:
        predicted = run.prediction.get(f.id) if run else None
        observed = run.observed.get(f.id) if run and run.status == "done" else None
        fields.append({
            "field": f,
            "label": mark_safe(markdown.render_inline(f.label)),
            "options": f.option_pairs(),
            "positions": list(range(1, (f.count or 0) + 1)),
            "predicted": predicted,
            "observed": observed,
            "score": round(100 * run.field_scores.get(f.id, 0)) if run and run.status == "done"
            else None,
            "pairs": (list(zip(predicted or [], observed or [])) if f.kind == "sequence"
                      and run and run.status == "done" else []),
            "predicted_label": _value_label(f, predicted),
            "observed_label": _value_label(f, observed),
        })
    return {
        "exercise": ex,
        "story": mark_safe(markdown.render(ex.story).html),
        "explanation": mark_safe(markdown.render(ex.explanation).html),
        "config_yaml": yaml.safe_dump(config, sort_keys=False) if config else "",
        "is_simulation": ex.scenario == "simulation",
        "steps": describe_steps(ex),
        "fields": fields,
        "run": run,
        "runs": runs,
        "score": round(100 * run.score) if run and run.score is not None else None,
        "lesson": cat.lesson(ex.lesson) if ex.lesson else None,
        "level_label": LEVEL_LABELS[ex.level],
        "topic": TOPICS[ex.topic],
        "dashboard_url": dashboard_url(sbx.sandbox_id_for(learner_key)),
    }


def _value_label(f, value):
    if value is None:
        return None
    if f.kind == "choice":
        return f.label_of(str(value))
    if f.kind == "number":
        return f"{float(value):g}"
    return value


def describe_steps(ex: Exercise) -> list[str]:
    """The exercise's scenario in words (what will be done, not what will happen)."""
    out = []
    if ex.simulation is not None:
        for case, params in ex.simulation.cases.items():
            out.append(f"Compute case “{case}” with the model {ex.simulation.model}: "
                       + ", ".join(f"{k} = {v}" for k, v in params.items()) + ".")
    if ex.faults:
        out.append("Set faults: " + "; ".join(
            f"{b}: " + ", ".join(f"{k}={v}" for k, v in knobs.items())
            for b, knobs in ex.faults.items()))
    n = 0
    for step in ex.steps:
        if step.say:
            if step.request is not None:
                n += len(step.clients) if step.clients else step.repeat
            out.append(step.say)
        elif step.request is not None:
            req = step.request
            count = len(step.clients) if step.clients else step.repeat
            first, last = n + 1, n + count
            n = last
            which = f"request {first}" if count == 1 else f"requests {first}–{last}"
            extra = []
            if step.clients:
                extra.append("one from each client " + ", ".join(step.clients))
            if req.headers:
                extra.append("headers " + ", ".join(f"{k}: {v}" for k, v in req.headers.items()))
            if req.jar:
                extra.append("sending back any cookie it was given")
            if step.background:
                extra.append("in the background (not waiting for the answer)")
            if step.tag:
                extra.append(f"tagged “{step.tag}”")
            out.append(f"Send {which}: {req.method} {req.path}"
                       + (f" ({'; '.join(extra)})" if extra else "") + ".")
        elif step.action:
            out.append(f"Admin API: {step.action} {step.backend}.")
        elif step.balancer is not None:
            out.append(f"Admin API: switch pool web to {step.balancer.get('algorithm')}.")
        elif step.faults is not None:
            out.append("Set faults: " + "; ".join(f"{b}: {k}" for b, k in step.faults.items()))
        elif step.sleep is not None:
            out.append(f"Wait {step.sleep:g} s.")
    if ex.race:
        out.append("At one instant, set faults: " + "; ".join(
            f"{b}: " + ", ".join(f"{k}={v}" for k, v in knobs.items())
            for b, knobs in ex.race.faults.items())
            + f". Then watch the proxy for up to {ex.race.timeout:g} s.")
    return out


# ---------------------------------------------------------------- for other apps

def current_lesson(learner_key: str) -> LessonProgress | None:
    """The lesson the learner touched last (opened, answered, set up live), or None."""
    return (LessonProgress.objects.filter(learner_key=learner_key)
            .order_by("-updated_at").first())


def learner_summary(learner_key: str) -> dict:
    """One learner's course progress in plain data (a workshop cockpit shows this)."""
    cat = catalog()
    current = current_lesson(learner_key)
    lesson = cat.lesson(current.lesson_slug) if current else None
    done = LessonProgress.objects.filter(learner_key=learner_key,
                                         status=LessonProgress.Status.COMPLETED).count()
    drills = drill_stats(learner_key)
    predict = PredictionRun.objects.filter(learner_key=learner_key,
                                           status=PredictionRun.Status.DONE)
    return {
        "current_lesson": None if current is None else {
            "slug": current.lesson_slug, "title": lesson.title if lesson else current.lesson_slug,
            "status": current.status, "checks_correct": current.checks_correct,
            "checks_total": current.checks_total, "updated_at": current.updated_at,
            "url": reverse("course:lesson", kwargs={"slug": current.lesson_slug})},
        "lessons_done": done,
        "lessons_total": len(cat.lessons),
        "drills_graded": drills["done"],
        "drills_total": drills["total"],
        "predictions_run": predict.count(),
        "prediction_average": (round(100 * avg) if (avg := predict.aggregate(a=Avg("score"))["a"])
                               is not None else None),
    }
