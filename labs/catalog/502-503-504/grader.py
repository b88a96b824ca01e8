"""502/503/504: the learner's answers against what the recorded events say."""
from labs.framework.grading import Result, count_chart, drop_none, request_diagram, verdict
from labs.framework.recording import cause_of, failed

INCIDENTS = ("A", "B", "C")


def truth(run, label):
    begin = run.mark(f"incident {label} begins")
    end = run.mark(f"incident {label} ends")
    if not begin:
        return None, []
    t1 = (end or {"t": run.end})["t"] + 0.6  # requests in flight at the end, checks catching up
    bad = [e for e in run.requests(start=begin["t"], end=t1) if failed(e)]
    counts = {}
    for e in bad:
        key = (int(e.get("status") or 0), cause_of(e), e.get("backend") or "none")
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None, []
    key = max(counts, key=counts.get)
    examples = [e for e in bad if (int(e.get("status") or 0), cause_of(e),
                                   e.get("backend") or "none") == key]
    return {"status": key[0], "cause": key[1], "backend": key[2], "count": len(examples),
            "of": len(bad), "t": begin["t"]}, examples


FIELDS = ("status", "cause", "backend")

# Where to look for each field, never what it is: the answers are earned by tracing.
LOOK = {
    "status": "the status column",
    "cause": "the termination code, error and proxy_error of a failed request, against the "
             "cause words",
    "backend": "the backend column (none: no backend was picked)",
}


def grade(run):
    answers = run.answers or {}
    checks, diagrams, metrics = [], [], {}
    for label in INCIDENTS:
        real, examples = truth(run, label)
        given = answers.get(label) or {}
        if real is None:
            checks.append((False, f"incident {label}: the recording has no failed request in "
                           "its window (the run did not reproduce it); run the lab again"))
            continue
        said = {k: given.get(k, "?") for k in FIELDS}
        wrong = [k for k in FIELDS if str(said[k]) != str(real[k])]
        ex = examples[0]
        where = (f"{real['of']} failed requests from lab second {real['t']:.1f}, "
                 f"e.g. {ex.get('request_id')}")
        if not wrong:
            line = (f"incident {label}: {said['status']} {said['cause']} on "
                    f"{said['backend']} is what the events show ({real['count']} requests)")
        elif all(str(said[k]) == "?" for k in FIELDS):
            line = f"incident {label}: not answered yet; {where} to trace"
        else:
            unanswered = [k for k in wrong if str(said[k]) == "?"]
            mistaken = [k for k in wrong if k not in unanswered]
            parts = []
            if mistaken:
                parts.append(f"{' and '.join(mistaken)} wrong")
            if unanswered:
                parts.append(f"{' and '.join(unanswered)} not answered")
            hints = "; ".join(f"{k}: {LOOK[k]}" for k in wrong)
            line = f"incident {label}: {', '.join(parts)}. Trace {where}. Look at {hints}"
        checks.append((not wrong, line))
        # What the page may show: which fields are right, never the right values.
        metrics[label] = {"answer": said, "correct": not wrong, "wrong_fields": wrong,
                          "requests": real["of"]}
        # The trace of one failed request per incident: reading it is the exercise.
        diagrams.append(request_diagram(ex, f"Incident {label}: request {ex.get('request_id')}"))
    passed, evidence = verdict(checks)
    right = sum(1 for m in metrics.values() if m["correct"])
    if not passed and not answers:
        evidence.append("INFO  answer in lab.answers (see the lab's steps)")
    return Result(
        passed=passed,
        headline=f"{right} of {len(INCIDENTS)} incidents named correctly",
        evidence=evidence,
        metrics=metrics,
        chart=count_chart(run, "Failed requests per second, by status",
                          {"502": lambda e: failed(e) and e.get("status") == 502,
                           "503": lambda e: failed(e) and e.get("status") == 503,
                           "504": lambda e: failed(e) and e.get("status") == 504},
                          bucket=0.25, marker_kinds=["fault"]),
        diagrams=drop_none(diagrams))
