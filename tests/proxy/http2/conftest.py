"""HTTP/2 fixtures: the e2e toy backends and proxies, the lab PKI, toy gRPC backends."""
from __future__ import annotations

import pytest

from labs.backend.testing import start_backends
from tests.proxy.e2e.conftest import backends, proxy_factory  # noqa: F401 - shared fixtures
from tests.proxy.tls.conftest import lab_pki, tls_proxy  # noqa: F401 - shared fixtures


@pytest.fixture(scope="module")
def grpc_backends():
    handles = start_backends(["g1", "g2", "g3", "g4"], "--mode", "grpc")
    yield {h.name: h for h in handles}
    for h in handles:
        h.stop()
