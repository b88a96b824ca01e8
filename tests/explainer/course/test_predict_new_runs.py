"""The predict exercises added for issue 15 (least connections, outlier ejection) run in a
real sandbox and the model answer scores 100 % against what the proxy did."""
import pytest

from explainer.course.content import catalog
from explainer.course.services import predict
from tests.explainer.course.test_sandbox_runs import KEY, sandbox  # noqa: F401 (fixture)


@pytest.mark.django_db
def test_least_connections_keeps_the_busy_backend_to_one(sandbox):  # noqa: F811
    ex = catalog().exercise("least-connections-busy")
    row = predict.run(KEY, ex, {"b1_lc": 1, "b1_rr": 2})
    assert row.status == "done", row.error
    assert row.observed == {"b1_lc": 1, "b1_rr": 2}, row.evidence.get("requests")
    assert row.score == 1.0


@pytest.mark.django_db
def test_outlier_ejection_after_three_500s(sandbox):  # noqa: F811
    ex = catalog().exercise("outlier-ejection")
    row = predict.run(KEY, ex, {"b3_first": 3, "b3_later": 0, "status_3": "500",
                                "made_by_3": "backend"})
    assert row.status == "done", row.error
    assert row.observed == {"b3_first": 3, "b3_later": 0, "status_3": "500",
                            "made_by_3": "backend"}, row.evidence.get("requests")
    assert row.score == 1.0


@pytest.mark.django_db
def test_round_robin_puts_every_slow_request_on_one_backend(sandbox):  # noqa: F811
    ex = catalog().exercise("rr-mixed-durations")
    row = predict.run(KEY, ex, {"slow_b1_rr": 3, "slow_b1_lor": 1})
    assert row.status == "done", row.error
    assert row.observed == {"slow_b1_rr": 3, "slow_b1_lor": 1}, [
        (r["tag"], r["backend"]) for r in row.evidence.get("requests", [])]
    assert row.score == 1.0
