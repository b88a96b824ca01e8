"""The benchmarks' generators make configs their programs accept, and wrk output parses.

No speed is measured here (that is bench/'s job); this only keeps the bench
scripts from rotting when the proxy's config shape changes.
"""
import subprocess

import pytest

from bench import common as c
from bench import health, l7

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us   1.02s    89.12%
    Req/Sec    40.12k     1.23k   42.00k    78.00%
  Latency Distribution
     50%  850.00us
     75%    1.40ms
     90%    1.60ms
     99%    2.50ms
  401234 requests in 10.00s, 50.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  40123.40
Transfer/sec:      5.01MB
"""

BACKENDS = [("127.0.0.1", 9001), ("127.0.0.1", 9002)]


def test_l7_config_is_accepted_by_the_proxy():
    config = c.lblab_config(8080, 9900, {"web": c.lblab_pool(BACKENDS)})
    c.check_lblab_config(config)


def test_l4_config_is_accepted_by_the_proxy():
    config = c.lblab_config(8080, 9900, {"web": c.lblab_pool(BACKENDS)}, protocol="tcp")
    c.check_lblab_config(config)
    assert config["listeners"]["web"] == {"bind": "127.0.0.1:8080", "protocol": "tcp",
                                          "pool": "web"}


def test_health_configs_are_accepted_by_the_proxy():
    args = health.parse_args(["--interval", "100ms", "--check-traffic"])
    checked = [("127.0.0.1", 10000 + i) for i in range(50)]
    for variant in ("off", "on"):
        config = health.make_config(args, variant, 8080, 9900, BACKENDS, checked)
        c.check_lblab_config(config)
        assert ("health" in config["pools"]["checked"]) == (variant == "on")


def test_a_bad_generated_config_is_reported_with_its_path():
    config = c.lblab_config(8080, 9900, {"web": c.lblab_pool(BACKENDS, algorithm="nope")})
    with pytest.raises(c.BenchError, match="pools.web.balancer.algorithm"):
        c.check_lblab_config(config)


def test_wrk_text_output_parses():
    r = c.parse_wrk(WRK_OUTPUT)
    assert r.requests == 401234 and r.seconds == 10.0
    assert r.rps == 40123.40
    assert r.latency_avg_ms == pytest.approx(1.23) and r.latency_max_ms == pytest.approx(1020)
    assert r.percentiles_ms == pytest.approx({"50": 0.85, "75": 1.4, "90": 1.6, "99": 2.5})
    assert r.errors == {"connect": 0, "read": 2, "write": 0, "timeout": 1}
    assert r.non_2xx_3xx == 12 and r.error_count == 15


def test_wrk_lua_summary_overrides_the_rounded_text():
    line = ('WRKJSON {"requests":100,"duration_us":2000000,"bytes":1,"connect":0,"read":0,'
            '"write":0,"status":3,"timeout":0,"mean_us":1500.0,"stdev_us":10.0,"max_us":9000,'
            '"p50_us":1400,"p75_us":1500,"p90_us":1600,"p99_us":2500,"p999_us":8000}\n')
    r = c.parse_wrk(WRK_OUTPUT + line)
    assert r.rps == 50.0 and r.p99_ms == 2.5 and r.percentiles_ms["99.9"] == 8.0
    assert r.non_2xx_3xx == 3


@pytest.mark.parametrize("kind", ["origin", "proxy"])
def test_nginx_configs_pass_nginx_t(tmp_path, kind):
    text = (c.nginx_origin_config(tmp_path, [9001, 9002]) if kind == "origin"
            else c.nginx_proxy_config(tmp_path, 8080, BACKENDS))
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    done = subprocess.run([c.NGINX, "-t", "-p", str(tmp_path), "-c", str(conf)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("mode", ["http", "tcp"])
def test_haproxy_configs_pass_haproxy_c(tmp_path, mode):
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(c.haproxy_config(tmp_path, 8080, BACKENDS, mode=mode))
    done = subprocess.run([c.HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- bench/l4.py

def test_l4_churn_workload_sends_connection_close_and_baseline_adds_a_target():
    from bench import l4

    args = l4.parse_args(["--workloads", "churn,small", "--targets", "lblab,haproxy",
                          "--baseline", "main"])
    assert args.workloads == ["churn", "small"]
    assert args.targets == ["lblab", l4.BASE, "haproxy"]
    assert l4.wrk_request("churn") == ("/", ["Connection: close"])
    assert l4.wrk_request("small") == ("/", [])
    assert l4.wrk_request("bulk") == ("/big", [])


def test_l4_base_target_needs_a_revision(capsys):
    from bench import l4

    with pytest.raises(SystemExit):
        l4.parse_args(["--targets", "lblab-base"])
    assert "needs --baseline REV" in capsys.readouterr().err


def _round(target, rps, cpu_pct):
    name = "lblab-base" if target == "lblab-base" else target
    result = c.WrkResult(url="", command="", requests=int(rps), seconds=1.0, rps=rps,
                         cpu={"process_pct": {name: cpu_pct}, "process_system_pct": {name: 1.0}})
    return {"target": target, "workload": "churn", "result": result}


def test_l4_summary_lists_every_round_and_pairs_rounds_against_the_baseline():
    from bench import l4

    rounds = {
        ("churn", "lblab"): [_round("lblab", 900, 100), _round("lblab", 1000, 50)],
        ("churn", "lblab-base"): [_round("lblab-base", 450, 100), _round("lblab-base", 800, 80)],
        ("churn", "haproxy"): [_round("haproxy", 2000, 100), _round("haproxy", 2000, 100)],
    }
    rows, verdicts = l4.summarise(rounds, ["lblab", "lblab-base", "haproxy"], ["churn"])
    lblab = rows[0]
    assert lblab["each"] == "0.9k 2.0k"  # req per CPU-second, round by round
    v = verdicts["churn"]
    # Median rounds: lblab 1000 req/s at 50 % CPU (the higher of two: index 1) vs 2000.
    assert v["ratio"] == 0.5 and not v["met"]
    assert v["ratio_per_cpu_second"] == 1.0 and v["met_per_cpu_second"]
    # Paired: round 1 900/450 = 2.0, round 2 2000/1000 = 2.0.
    assert v["vs_base_each_round"] == [2.0, 2.0] and v["vs_base_per_cpu_second"] == 2.0
    assert "LBLab vs lblab-base per CPU-second 2.00x" in l4.verdict_line("churn", v)


def test_bench_ports_stay_in_the_block_given(monkeypatch):
    monkeypatch.setenv(c.PORT_RANGE_ENV, "38950-38999")
    assert all(38950 <= p <= 38999 for p in [c.free_port(), *c.free_ports(3)])
    monkeypatch.setenv(c.PORT_RANGE_ENV, "38950")
    with pytest.raises(c.BenchError, match="LOW-HIGH"):
        c.free_port()


def test_l4_profile_reads_calls_per_request(tmp_path):
    import cProfile

    from bench import l4

    profiler = cProfile.Profile()
    profiler.enable()
    sorted(range(100), key=lambda x: -x)  # 100 calls of the lambda, and a few more
    profiler.disable()
    stats = tmp_path / "proxy.pstats"
    profiler.dump_stats(str(stats))

    class Written:  # what the profiler wrapper prints once the file is complete
        def output(self):
            return f"profile written to {stats}\n"

    prof = l4.read_profile(Written(), stats, requests=10, top=5)
    assert prof["calls"] >= 100 and prof["calls_per_request"] == prof["calls"] / 10
    assert prof["top"][0].split()[:2] == ["ncalls", "tottime"]
    assert l4.parse_args(["--profile", "--baseline", "HEAD"]).profile


def test_l7_variants_and_their_checked_pool_are_accepted():
    args = l7.parse_args(["--targets", "origin,lblab-zero,lblab,lblab-dash,nginx"])
    assert args.targets == ["origin", "lblab-zero", "lblab", "lblab-dash", "nginx"]
    assert args.health_interval == "1s"
    health_check = {"type": "http", "path": "/health", "interval": args.health_interval,
                    "timeout": "500ms"}
    c.check_lblab_config(c.lblab_config(8080, 9900, {"web": c.lblab_pool(
        BACKENDS, health=health_check)}))
    with pytest.raises(SystemExit):
        l7.parse_args(["--targets", "lblab-fast"])


def test_l7_inproc_drives_real_requests_through_every_variant():
    """bench/l7_inproc.py's rig answers real requests (200s checked by the script)."""
    import sys

    out = subprocess.run(
        [sys.executable, "bench/l7_inproc.py", "-n", "300", "--rounds", "1",
         "--variants", "zero,lblab,dash,full"],
        capture_output=True, text=True, timeout=120, cwd=c.REPO)
    assert out.returncode == 0, out.stderr
    for variant in ("zero", "lblab", "dash", "full"):
        assert f"round 1/1: {variant} " in out.stdout


# strace -c's table as strace 6.1 writes it (calls with and without errors, the total).
STRACE_SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 24.03    0.061210          13      4590           write
 11.75    0.029661           6      4590           close
 10.50    0.026159           5      4590      2295 read
  3.53    0.008991           3      2295           accept4
------ ----------- ----------- --------- --------- ----------------
100.00    0.126021           7     16065      2295 total
"""


def test_l4_syscalls_are_counted_per_request_from_straces_table():
    from bench import l4

    counts = l4.parse_strace_summary(STRACE_SUMMARY)
    assert counts == {"write": 4590, "close": 4590, "read": 4590, "accept4": 2295}
    assert l4.per_request(counts, 2295) == {"total": 7.0, "write": 2.0, "close": 2.0,
                                            "read": 2.0, "accept4": 1.0}
    assert l4.per_request(counts, 0) == {}


def test_l4_syscalls_and_profile_are_not_given_together(capsys):
    from bench import l4

    with pytest.raises(SystemExit):
        l4.parse_args(["--syscalls", "--profile"])
    assert "give one of them per run" in capsys.readouterr().err
