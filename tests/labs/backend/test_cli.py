"""Command line parsing: fault flags map onto the same validated knobs as the control API."""

import pytest

from labs.backend.__main__ import parse_args


def test_fault_flags_become_the_initial_patch():
    args, patch = parse_args([
        "--name", "b1", "--port", "9001", "--latency-ms", "200", "--jitter-ms", "12.5",
        "--error-rate", "0.1", "--error-status", "503", "--hang", "--reset",
        "--crash-mid-response", "0.25", "--warmup", "5", "--cpu-ms", "3", "--dependency-down",
    ])
    assert (args.name, args.port, args.host, args.redis_url) == ("b1", 9001, "127.0.0.1", None)
    assert patch == {
        "latency_ms": 200, "jitter_ms": 12.5, "error_rate": 0.1, "error_status": 503,
        "hang": True, "reset": True, "crash_mid_response": 0.25, "warmup_s": 5, "cpu_ms": 3,
        "dependency_down": True,
    }


def test_no_flags_no_faults():
    _, patch = parse_args(["--name", "b1", "--port", "0"])
    assert patch == {}


def test_faults_json_flag_and_overrides():
    _, patch = parse_args(["--name", "b1", "--port", "0", "--faults", '{"latency_ms": 5, "hang": true}',
                           "--latency-ms", "7"])
    assert patch == {"latency_ms": 7, "hang": True}


@pytest.mark.parametrize("argv, message", [
    (["--error-rate", "1.5"], "--error-rate: error_rate must be between 0 and 1, got 1.5"),
    (["--latency-ms", "-3"], "--latency-ms: latency_ms must be >= 0, got -3"),
    (["--reset", "7"], "--reset: reset must be true, false or a rate between 0 and 1, got 7"),
    (["--faults", '{"nope": 1}'], "--faults: unknown fault 'nope'"),
    (["--faults", "{"], "--faults: Expecting property name"),
    (["--port", "70000"], "--port must be between 0 and 65535, got 70000"),
    (["--name", "b 1"], "--name must be 1-64 letters"),
])
def test_bad_flags_are_refused_with_a_reason(argv, message, capsys):
    base = {"--name": "b1", "--port": "0"}
    for i in range(0, len(argv), 2):
        base[argv[i]] = argv[i + 1]
    flat = [x for kv in base.items() for x in kv]
    with pytest.raises(SystemExit) as info:
        parse_args(flat)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
