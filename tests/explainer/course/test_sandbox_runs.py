"""The course in a real sandbox: a preset applied through the admin API, sample traffic,
and predictions scored against what the proxy really did (real processes, loopback ports)."""
import pytest
from django.test import override_settings

from explainer.course.content import catalog
from explainer.course.services import predict
from explainer.course.services import sandbox as sbx

KEY = "s:course-sandbox-test"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, django_db_setup, django_db_blocker):
    state = tmp_path_factory.mktemp("course-state")
    with pytest.MonkeyPatch.context() as mp, override_settings(LBLAB_LABS_STATE_DIR=str(state)):
        mp.setenv("LBLAB_STATE_DIR", str(state))
        with django_db_blocker.unblock():  # ensure() asks the labs whether a run owns it
            sb = sbx.ensure(KEY)
        try:
            yield sb
        finally:
            sbx.service().stop(sb.id, grace=2.0)


@pytest.mark.django_db
def test_the_learner_gets_one_sandbox_and_keeps_it(sandbox):
    assert sandbox.id == sbx.sandbox_id_for(KEY) and sandbox.id.startswith("lab-")
    assert sorted(sandbox.backends) == sbx.BACKENDS
    assert sbx.ensure(KEY).created_at == sandbox.created_at  # reused, not restarted


@pytest.mark.django_db
def test_preset_sample_traffic_and_recent_decisions(sandbox):
    lesson = catalog().lesson("what-a-balancer-does")
    sb, state = sbx.apply_preset(KEY, lesson.preset_config)
    assert sb.id == sandbox.id
    assert state["pools"]["web"]["algorithm"] == "round_robin"
    assert not sbx.wait_ready(sb)
    sent = sbx.send_sample(KEY, lesson.live_traffic)
    assert sent["ok"] and "12× 200" in sent["message"]
    recent = sbx.recent(KEY)
    assert recent["running"] and len(recent["rows"]) == 12
    assert {r["backend"] for r in recent["rows"]} == {"b1", "b2", "b3", "b4"}
    assert recent["rows"][0]["why"].startswith("index=")
    assert "pool web" in recent["diagram"]


@pytest.mark.django_db
def test_a_bad_preset_is_refused_with_the_proxys_path(sandbox):
    config = dict(catalog().lesson("what-a-balancer-does").preset_config)
    config["pools"] = {"web": {"balancer": {"algorithm": "round_robbin"}, "backends": []}}
    with pytest.raises(sbx.SandboxUnavailable) as err:
        sbx.apply_preset(KEY, config)
    assert err.value.status == 422
    assert any(e["path"] == "pools.web.balancer.algorithm" for e in err.value.errors)


@pytest.mark.django_db
def test_predicting_round_robin_around_maintenance(sandbox):
    ex = catalog().exercise("rr-maintenance")
    run = predict.run(KEY, ex, {"order": ["b1", "b2", "b4", "b1", "b2", "b4"]})
    assert run.status == "done", run.error
    assert run.observed["order"] == ["b1", "b2", "b4", "b1", "b2", "b4"] and run.score == 1.0
    requests = run.evidence["requests"]
    assert [r["why"] for r in requests][:3] == ["index=0 · of=3", "index=1 · of=3",
                                               "index=2 · of=3"]
    assert run.evidence["diagram"].startswith("sequenceDiagram")  # request 3's real path
    # A second prediction, half wrong, scores half: the balancer starts fresh each run.
    run = predict.run(KEY, ex, {"order": ["b1", "b2", "b3", "b4", "b1", "b2"]})
    assert run.score == 0.3333


@pytest.mark.django_db
def test_predicting_status_codes_and_who_made_them(sandbox):
    ex = catalog().exercise("status-codes")
    run = predict.run(KEY, ex, {"statuses": ["200", "502", "503", "200"], "who503": "proxy"})
    assert run.observed == {"statuses": ["200", "504", "503", "200"], "who503": "backend"}
    assert run.field_scores == {"statuses": 0.75, "who503": 0.0}
    timed_out = run.evidence["requests"][1]
    assert timed_out["backend"] == "b2" and timed_out["error_code"] == "response-timeout"
    assert timed_out["made_by"] == "proxy"


@pytest.mark.django_db
def test_predicting_the_health_race(sandbox):
    ex = catalog().exercise("health-race")
    run = predict.run(KEY, ex, {"first": "b3", "b3_time": 0.7, "b1_time": 1.5})
    assert run.status == "done", run.error
    assert run.observed["first"] == "b3"
    assert 0.45 <= run.observed["b3_time"] <= 0.85
    assert 0.9 <= run.observed["b1_time"] <= 2.2
    removals = [c for c in run.evidence["changes"] if c["new"] == "unhealthy"]
    assert [c["backend"] for c in removals] == ["b3", "b1"]
    assert "3 consecutive failures" in removals[0]["cause"]
    assert run.evidence["diagram"].startswith("sequenceDiagram")
