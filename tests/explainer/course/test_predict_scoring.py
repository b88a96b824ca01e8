"""Scoring a prediction against observations (pure: no sandbox)."""
from explainer.course.content import Exercise, PredictField
from explainer.course.services.predict import observation_problem, observe, percentile, score_field


def field(**kw):
    base = {"id": "f", "kind": "number", "label": "a field", "observe": "p99:a",
            "tolerance": 10, "tolerance_pct": 25}
    return PredictField.model_validate({**base, **kw})


def test_sequence_scores_positions():
    f = field(kind="sequence", count=4, options=["b1", "b2"], observe="backends", tolerance=0)
    assert score_field(f, ["b1", "b2", "b1", "b2"], ["b1", "b2", "b1", "b2"]) == 1.0
    assert score_field(f, ["b1", "b1", "b1", "b1"], ["b1", "b2", "b1", "b2"]) == 0.5


def test_number_full_within_tolerance_half_within_twice():
    f = field()  # ±max(10 ms, 25 %)
    assert score_field(f, 200, 210) == 1.0
    assert score_field(f, 150, 200) == 1.0  # 25 % of 200 = 50
    assert score_field(f, 110, 200) == 0.5  # within 100
    assert score_field(f, 20, 200) == 0.0
    assert score_field(f, 5, None) == 0.0


def test_choice():
    f = field(kind="choice", options=["a", "b"], observe="status:1")
    assert score_field(f, "a", "a") == 1.0 and score_field(f, "b", "a") == 0.0


RECORDS = [
    {"index": 1, "tag": "x", "client": "127.0.0.2", "backend": "b1", "status": 200,
     "made_by": "backend", "latency_ms": 1.0, "seconds": 0.01},
    {"index": 2, "tag": "x", "client": "127.0.0.3", "backend": "b4", "status": 200,
     "made_by": "backend", "latency_ms": 200.0, "seconds": 0.2},
    {"index": 3, "tag": "y", "client": "127.0.0.2", "backend": "b2", "status": 200,
     "made_by": "backend", "latency_ms": 2.0, "seconds": 0.01},
    {"index": 4, "tag": "y", "client": "127.0.0.3", "backend": "b3", "status": 503,
     "made_by": "proxy", "latency_ms": 0.3, "seconds": 0.0},
]


def exercise(**kw):
    data = {"slug": "ex-test", "title": "A test exercise", "level": "mid", "topic": "algorithms",
            "summary": "A summary long enough to pass.", "story": "A story long enough to pass.",
            "scenario": "sequence", "config": {"base": "proxy/examples/round_robin.yaml"},
            "steps": [{"request": {}, "clients": ["127.0.0.2", "127.0.0.3"], "tag": "x"},
                      {"request": {}, "clients": ["127.0.0.2", "127.0.0.3"], "tag": "y"}],
            "predict": [{"id": "f", "kind": "number", "label": "moved clients",
                         "observe": "moved:x:y", "tolerance": 1}],
            "explanation": "An explanation that is long enough to pass validation."}
    return Exercise.model_validate({**data, **kw})


def test_observations_of_a_sequence():
    ex = exercise()
    assert observe(ex, "backends", RECORDS, None) == ["b1", "b4", "b2", "b3"]
    assert observe(ex, "statuses:y", RECORDS, None) == ["200", "503"]
    assert observe(ex, "moved:x:y", RECORDS, None) == 2
    assert observe(ex, "who_moved:x:y:b4", RECORDS, None) == "also"
    assert observe(ex, "made_by:4", RECORDS, None) == "proxy"
    assert observe(ex, "outcome:3:b2", RECORDS, None) == "same"
    assert observe(ex, "outcome:4:b3", RECORDS, None) == "error"
    assert observe(ex, "count:b4:x", RECORDS, None) == 1
    assert observe(ex, "p99:x", RECORDS, None) == 200.0
    assert percentile([1, 2, 3, 4], 50) == 2


def test_observations_of_a_race():
    race = {"first": "b3", "detected": {"b3": 0.75}}
    ex = exercise()
    assert observe(ex, "first_unhealthy", [], race) == "b3"
    assert observe(ex, "detect_s:b3", [], race) == 0.75
    assert observe(ex, "unhealthy:b1", [], race) == "no"


def test_observation_problems_are_explained():
    ex = exercise()
    bad = [("sequence", "backends", "count is 3 but backends has 4 requests"),
           ("choice", "status:9", "request number '9': the steps send 4 requests"),
           ("number", "moved:x:z", "no step has tag 'z'"),
           ("choice", "first_unhealthy", "is an observation of a health_race"),
           ("number", "backends", "a number field cannot read backends")]
    for kind, spec, why in bad:
        extra = {"options": ["a", "b"]} if kind != "number" else {"tolerance": 1}
        if kind == "sequence":
            extra["count"] = 3
        f = PredictField.model_validate({"id": "f", "kind": kind, "label": "a field",
                                         "observe": spec, **extra})
        assert why in (observation_problem(ex, f) or ""), (spec, observation_problem(ex, f))
