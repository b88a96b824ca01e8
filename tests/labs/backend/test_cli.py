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


def test_listen_flags_defaults():
    args, _ = parse_args(["--name", "b1", "--port", "9001"])
    assert (args.mode, args.tls, args.proxy_protocol, args.control_port, args.ssl_context) == \
        ("http", False, False, None, None)
    args, _ = parse_args(["--name", "b1", "--port", "9001", "--mode", "tcp", "--proxy-protocol"])
    assert (args.mode, args.control_port, args.proxy_protocol) == ("tcp", 0, True)  # free port
    args, _ = parse_args(["--name", "b1", "--port", "9001", "--control-port", "9101"])
    assert args.control_port == 9101


def test_tls_flags_build_a_server_context(tls_files):
    import ssl

    args, _ = parse_args(["--name", "b1", "--port", "0", "--tls", "--cert", tls_files.cert,
                          "--key", tls_files.key, "--client-ca", tls_files.client_ca])
    ctx = args.ssl_context
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("argv, message", [
    (["--tls"], "--tls needs --cert FILE"),
    (["--cert", "x.pem"], "--cert only makes sense with --tls"),
    (["--client-ca", "x.pem"], "--client-ca only makes sense with --tls"),
    (["--tls", "--cert", "/nonexistent/cert.pem"], "--cert: no such file: /nonexistent/cert.pem"),
    (["--mode", "quic"], "argument --mode: invalid choice: 'quic'"),
    (["--mode", "udp", "--tls"], "--tls is not available with --mode udp"),
    (["--control-port", "70000"], "--control-port must be between 0 and 65535"),
    (["--port", "9001", "--control-port", "9001"], "--control-port must differ from --port (9001)"),
])
def test_bad_listen_flags_are_refused(argv, message, capsys):
    base = ["--name", "b1"] + (["--port", "0"] if "--port" not in argv else [])
    with pytest.raises(SystemExit):
        parse_args(base + argv)
    assert message in capsys.readouterr().err


def test_unusable_certificate_files_are_refused(tls_files, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--name", "b1", "--port", "0", "--tls", "--cert", tls_files.ca])  # no key
    assert "cannot load the certificate chain and private key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--name", "b1", "--port", "0", "--tls", "--cert", tls_files.cert,
                    "--key", tls_files.key, "--client-ca", tls_files.key])
    err = capsys.readouterr().err
    assert f"--client-ca {tls_files.key}: not a PEM CA bundle" in err
