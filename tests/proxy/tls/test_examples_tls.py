"""The TLS examples name files of the lab PKI; with a PKI made by `pki init` they all load."""
from __future__ import annotations

import pytest

from proxy.config import load_config_file
from proxy.tls import build_server_tls, build_upstream_tls
from tests.proxy.e2e.support import REPO
from tests.proxy.tls.conftest import state_dir

EXAMPLES = ["tls-terminate", "tls-passthrough", "tls-reencrypt", "mtls", "l4", "websocket"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_files_exist_in_a_fresh_lab_pki(lab_pki, name):
    config = load_config_file(str(REPO / "proxy" / "examples" / f"{name}.yaml"))
    with state_dir(lab_pki):
        for lname, listener in config.listeners.items():
            server = build_server_tls(lname, listener)
            if listener.tls_mode == "terminate":
                assert server is not None and server.certs
        build_upstream_tls(config)


def test_check_files_lists_every_unusable_file_with_its_path(lab_pki, tmp_path):
    from proxy.config import load_config
    from proxy.tls import check_files

    not_pem = tmp_path / "junk.pem"
    not_pem.write_text("not a certificate")
    config = load_config(f"""
listeners:
  web:
    bind: 127.0.0.1:0
    routes: [all]
    tls:
      certificates: [{{pki: nowhere.lab.test}}, {{cert: {not_pem}, key: {not_pem}}}]
      client_ca: pki:missing-ca.pem
routes: {{all: {{forward: p}}}}
pools:
  p: {{tls: {{ca: /nonexistent/ca.pem}}, backends: [{{name: b1, address: "127.0.0.1:9"}}]}}
""")
    with state_dir(lab_pki):
        errors = dict(check_files(config))
    assert set(errors) == {"listeners.web.tls.client_ca", "listeners.web.tls.certificates[0].pki",
                           "listeners.web.tls.certificates[1]", "pools.p.tls.ca"}, errors
    assert "pki init" in errors["listeners.web.tls.certificates[0].pki"]
    assert "cannot use" in errors["listeners.web.tls.certificates[1]"]
