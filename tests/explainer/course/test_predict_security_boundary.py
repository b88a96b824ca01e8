"""The security-boundary exercise (the balancer's fourth role) runs in a real sandbox and
its model answer scores 100 %: only what a route forwards reaches a server, the 431 is
the proxy's own, and round robin's index moves only for what reached the balancer."""
import pytest

from explainer.course.content import catalog
from explainer.course.services import predict
from tests.explainer.course.test_sandbox_runs import KEY, sandbox  # noqa: F401 (fixture)

ANSWER = {"backends": ["b1", "none", "none", "none", "b2"],
          "statuses": ["200", "403", "404", "431", "200"], "who431": "proxy"}


@pytest.mark.django_db
def test_only_what_a_route_forwards_reaches_a_server(sandbox):  # noqa: F811
    ex = catalog().exercise("security-boundary")
    row = predict.run(KEY, ex, ANSWER)
    assert row.status == "done", row.error
    assert row.observed == ANSWER, row.evidence.get("requests")
    assert row.score == 1.0
    made = [r["made_by"] for r in row.evidence["requests"]]
    assert made[3] == "proxy" and made[0] == made[4] == "backend"
