"""`python -m proxy --check FILE`: every hostile file is a list of errors and exit 2,
never a traceback. In-process for generated variants, and as a real process."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from proxy.__main__ import EXIT_CONFIG, EXIT_OK, main

REPO = pathlib.Path(__file__).resolve().parents[2]
GOOD = (REPO / "proxy" / "examples" / "round_robin.yaml").read_bytes()


def families():
    return st.one_of(
        st.binary(max_size=3000).map(lambda b: ("bytes", b)),
        st.sampled_from(["utf-16", "utf-32", "utf-16-be"]).map(
            lambda e: ("encoding", GOOD.decode().encode(e))),
        st.integers(33, 50_000).map(lambda d: ("deep", b"[" * d + b"]" * d)),
        st.integers(31, 50_000).map(lambda d: ("digits", GOOD.replace(
            b"pools:", b"pools:\n  x:\n    retries: " + b"7" * d, 1))),
        st.tuples(st.integers(5, 9), st.integers(8, 12)).map(lambda t: ("bomb", (
            "a0: &a0 [" + ",".join(["x"] * t[1]) + "]\n" + "".join(
                f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * t[1]) + "]\n"
                for i in range(1, t[0]))).encode() + GOOD)),
        st.tuples(st.integers(0, len(GOOD) - 1), st.binary(min_size=1, max_size=6)).map(
            lambda t: ("splice", GOOD[:t[0]] + t[1] + GOOD[t[0]:])),
    )


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(families())
def test_check_never_prints_a_traceback(tmp_path, capsys, case):
    family, raw = case
    path = tmp_path / "c.yaml"
    path.write_bytes(raw)
    code = main(["--check", str(path)])
    out, err = capsys.readouterr()
    assert code in (EXIT_OK, EXIT_CONFIG), (family, out, err)
    assert "Traceback" not in out + err
    assert len(out) < 100 * 700  # at most 100 errors of bounded length
    if code == EXIT_OK:
        assert out.strip() == "ok"
    else:
        assert out.strip() and out.strip() != "ok"


def test_check_names_every_error_with_its_path(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(GOOD.replace(b"algorithm: round_robin", b"algorithm: nope")
                     .replace(b"127.0.0.1:9001", b"127.0.0.1:9001:1")
                     .replace(b"forward: web", b"forward: ghost"))
    assert main(["--check", str(path)]) == EXIT_CONFIG
    out = capsys.readouterr().out
    assert "pools.web.balancer.algorithm:" in out
    assert "pools.web.backends[0].address:" in out
    assert "routes.all: no pool named 'ghost'" in out


@pytest.mark.parametrize("name,raw", [
    ("utf16", GOOD.decode().encode("utf-16")),
    ("bomb", b"a: &a [x,x,x,x,x,x,x,x,x,x]\n" + b"".join(
        f"{c}: &{c} [{','.join([f'*{p}'] * 10)}]\n".encode()
        for p, c in zip("abcdefg", "bcdefgh")) + GOOD),
    ("deep", b"[" * 200_000 + b"]" * 200_000),
    ("bigint", b"listeners: " + b"1" * 100_000),
])
def test_check_as_a_real_process(tmp_path, name, raw):
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(raw)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "proxy", "--check", str(path)], cwd=REPO,
                          env=env, capture_output=True, timeout=60)
    assert done.returncode == EXIT_CONFIG
    assert b"Traceback" not in done.stdout + done.stderr
    assert 0 < len(done.stdout) < 2000, done.stdout[:500]
