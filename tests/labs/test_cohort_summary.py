"""The cohort's arithmetic and report (labs/cohort/summary.py) and the compose override that
gives the site the container driver (labs/cohort/deploy.py): pure, no sockets."""
from __future__ import annotations

import json

import pytest

from labs.cohort import deploy
from labs.cohort.summary import LearnerResult, RunResult, holds, percentile, summarize, table


def learner(name: str, start_s: float, fix_s: float, *, fix_passed: bool = True,
            errors: list[str] | None = None, fix_driver: str = "containers") -> LearnerResult:
    return LearnerResult(
        name=name, join_s=0.1, sandbox_start_s=1.0, dashboard_live_s=0.5, ticks=40,
        runs=[RunResult("start", False, passed=False, state="done", seconds=start_s,
                        sandbox_start_s=1.5, sandbox_mem_mb=80.0, driver="containers"),
              RunResult("fix", True, passed=fix_passed, state="done", seconds=fix_s,
                        sandbox_start_s=2.5, sandbox_mem_mb=82.0, driver=fix_driver)],
        errors=errors or [])


HOST = {"peak_mem_mb": 3000.4, "baseline_mem_mb": 1000.2, "cpus": 2, "load_1m": 4.0,
        "bringup_s": 5.0, "teardown_s": 2.0, "wall_s": 40.0, "left_behind": []}


def test_percentile_is_the_nearest_rank_so_every_figure_was_measured():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 50) == 10.0
    assert percentile(values, 95) == 19.0
    assert percentile(values, 100) == 20.0
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 95) is None
    with pytest.raises(ValueError, match="0 to 100"):
        percentile([1.0], 101)


def test_a_run_is_as_expected_only_when_it_finished_with_the_wanted_verdict():
    assert RunResult("start", False, passed=False, state="done").as_expected
    assert not RunResult("start", False, passed=True, state="done").as_expected
    assert not RunResult("fix", True, passed=None, state="done").as_expected  # not graded
    assert not RunResult("fix", True, passed=True, state="failed").as_expected
    assert not RunResult("fix", True).as_expected  # never started
    # A verdict on no traffic is no verdict, even the starting config's expected fail.
    assert not RunResult("start", False, passed=False, state="done", requests=0).as_expected
    assert RunResult("start", False, passed=False, state="done", requests=120).as_expected


def test_summary_counts_runs_verdicts_errors_and_times():
    learners = [learner("a", 10.0, 9.0), learner("b", 12.0, 30.0, fix_passed=False,
                                                 errors=["the fix run: done, passed=False"],
                                                 fix_driver="processes")]
    out = summarize("docker", learners, sandbox_mem_mb=[90.0, 88.0, 95.0], host=HOST,
                    errors=["deployment: slow"])
    assert out["engine"] == "docker" and out["learners"] == 2 and out["runs"] == 4
    assert out["graded_as_expected"] == 3
    assert out["errors"] == 2
    assert out["error_samples"] == ["deployment: slow", "b: the fix run: done, passed=False"]
    assert (out["lab_p50_s"], out["lab_p95_s"], out["lab_max_s"]) == (10.0, 30.0, 30.0)
    assert out["sandbox_start_p95_s"] == 1.0 and out["lab_sandbox_start_p95_s"] == 2.5
    assert out["sandbox_mem_mb"] == 90.0 and out["lab_sandbox_mem_mb"] == 80.0
    assert out["peak_host_mem_mb"] == 3000 and out["dashboards_live"] == 2
    assert out["lab_runs_on"] == {"containers": 3, "processes": 1}  # where runs' sandboxes ran
    json.dumps(out)  # the last line of ./lab cohort: it must serialise as it is
    for key in ("engine", "learners", "runs", "graded_as_expected", "errors", "lab_p50_s",
                "lab_p95_s", "sandbox_start_p95_s", "sandbox_mem_mb", "peak_host_mem_mb"):
        assert key in out


def test_a_cohort_with_nothing_measured_still_summarises():
    out = summarize("processes", [], sandbox_mem_mb=[], host={}, errors=["deployment: down"])
    assert out["runs"] == 0 and out["lab_p95_s"] is None and out["errors"] == 1
    assert not holds(out, None)


def test_holds_needs_every_run_as_expected_and_p95_within_three_single_lab_times():
    good = summarize("docker", [learner("a", 10.0, 11.0)], sandbox_mem_mb=[], host=HOST)
    assert holds(good, single_lab_s=4.0)  # 11 <= 3 x 4
    assert not holds(good, single_lab_s=3.0)  # 11 > 9
    wrong = summarize("docker", [learner("a", 10.0, 11.0, fix_passed=False)],
                      sandbox_mem_mb=[], host=HOST)
    assert not holds(wrong, None)
    leaky = summarize("docker", [learner("a", 10.0, 11.0)], sandbox_mem_mb=[],
                      host={**HOST, "left_behind": ["container abc"]})
    assert not holds(leaky, None)


def test_the_table_has_a_row_per_learner_runs_in_order_and_the_totals():
    learners = [learner("learner-01", 10.0, 9.0), learner("learner-02", 12.0, 8.0,
                                                         fix_passed=False)]
    out = summarize("processes", learners, sandbox_mem_mb=[81.0], host=HOST)
    text = table(out, learners)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["learner", "join"]
    assert lines[0].index("start (want fail)") < lines[0].index("fix (want pass)")
    assert "learner-01" in lines[2] and "fail ok 10.00s" in lines[2] and "pass ok" in lines[2]
    assert "pass WRONG" not in lines[3] and "fail WRONG 8.00s" in lines[3]
    assert "3/4 runs graded as expected" in text
    assert "LEFT BEHIND" not in text
    leaky = summarize("processes", learners, sandbox_mem_mb=[], host={
        **HOST, "left_behind": ["process 12: python -m proxy"]})
    assert "LEFT BEHIND: process 12: python -m proxy" in table(leaky, learners)


def test_the_site_override_gives_web_and_both_daphnes_the_container_driver():
    override = deploy.site_override("/tmp/x/state", "/run/e/docker.sock", 118, "31100-31999")
    services = override["services"]
    assert set(services) == {"web", "ws1", "ws2", "migrate"}
    for name in ("web", "ws1", "ws2"):
        site = services[name]
        assert site["environment"]["LBLAB_SANDBOX_DRIVER"] == "containers"
        assert site["environment"]["LBLAB_SANDBOX_HOST_STATE_DIR"] == "/tmp/x/state"
        assert site["environment"]["DOCKER_HOST"] == f"unix://{deploy.SOCKET_IN_SITE}"
        assert "/tmp/x/state:/var/lib/lblab" in site["volumes"]
        assert f"/run/e/docker.sock:{deploy.SOCKET_IN_SITE}" in site["volumes"]
        assert site["group_add"] == ["118"] and site["pid"] == "host"
    assert services["migrate"]["volumes"] == ["/tmp/x/state:/var/lib/lblab"]


def test_swarm_is_refused_with_what_to_do_until_its_driver_exists(monkeypatch):
    from labs.sandbox import drivers

    monkeypatch.delitem(drivers.DRIVERS, "swarm", raising=False)
    with pytest.raises(deploy.DeployError, match="swarm sandbox driver.*--engine docker"):
        deploy.make("swarm")
    with pytest.raises(deploy.DeployError, match="choose processes, docker or swarm"):
        deploy.make("kubernetes")
