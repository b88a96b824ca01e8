"""When a lab run gives up waiting for its traffic's first request (pure: no locust)."""
from labs.framework.runner import FIRST_REQUEST_S, LOCUST_START_MAX_S, first_request_overdue


def test_a_slow_locust_start_is_waited_for_until_its_own_limit():
    # 30 s after launch with users not yet spawned (a busy machine): still waiting.
    assert first_request_overdue(now=130.0, started=100.0, spawned_at=None) is None
    late = first_request_overdue(now=100.0 + LOCUST_START_MAX_S + 0.1, started=100.0,
                                 spawned_at=None)
    assert late == f"locust did not start its users within {LOCUST_START_MAX_S:g} s"


def test_the_first_request_is_due_within_its_limit_of_the_spawn():
    # Spawned 60 s after launch: the clock for the first request starts there.
    assert first_request_overdue(now=170.0, started=100.0, spawned_at=160.0) is None
    late = first_request_overdue(now=160.0 + FIRST_REQUEST_S + 0.1, started=100.0,
                                 spawned_at=160.0)
    assert late.startswith(f"no request reached the proxy within {FIRST_REQUEST_S:g} s")
