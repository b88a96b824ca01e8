"""TLS fixtures: a lab PKI made once per session, TLS toy backends, proxies that find it.

The PKI is made by `proxy.pki.init` in a temp folder (the real command, not a copy of
it). Proxies are started with LBLAB_STATE_DIR pointing there, so configs can say
`pki: www.lab.test` / `pki:ca.pem` exactly like the shipped examples.
"""
from __future__ import annotations

import contextlib
import os
import ssl
from pathlib import Path

import pytest

from labs.backend.testing import start_backend
from proxy import pki
from tests.proxy.e2e.conftest import backends, proxy_factory  # noqa: F401 - shared fixtures


@pytest.fixture(scope="session")
def lab_pki(tmp_path_factory) -> Path:
    state = tmp_path_factory.mktemp("state")
    pki.init(state / "pki")
    return state / "pki"


@contextlib.contextmanager
def state_dir(pki_dir: Path):
    """LBLAB_STATE_DIR for the processes started inside (the proxy reads pki: files there)."""
    old = os.environ.get("LBLAB_STATE_DIR")
    os.environ["LBLAB_STATE_DIR"] = str(pki_dir.parent)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LBLAB_STATE_DIR", None)
        else:
            os.environ["LBLAB_STATE_DIR"] = old


@pytest.fixture(scope="module")
def tls_proxy(proxy_factory, lab_pki):
    """start(config) -> a ready proxy process that resolves pki: against the lab PKI."""
    def start(config: dict, name: str = "proxy"):
        with state_dir(lab_pki):
            return proxy_factory(config, name=name)
    return start


def tls_backend(lab_pki: Path, name: str, cert: str, *extra: str):
    """A toy backend serving HTTPS (or TLS game sessions) with `cert` from the lab PKI."""
    return start_backend(name, None, "127.0.0.1", "--tls", "--cert", str(lab_pki / f"{cert}.pem"),
                         "--key", str(lab_pki / f"{cert}.key"), *extra)


@pytest.fixture(scope="session")
def tls_backends(lab_pki):
    """Toy HTTPS backends: t1 and t2 with their own certificates, tw-name with a
    certificate for another name, tw-self with a self-signed one."""
    handles = {
        "t1": tls_backend(lab_pki, "t1", "b1"),
        "t2": tls_backend(lab_pki, "t2", "b2"),
        "tw-name": tls_backend(lab_pki, "tw-name", "wrong-name"),
        "tw-self": tls_backend(lab_pki, "tw-self", "wrong-selfsigned"),
    }
    yield handles
    for h in handles.values():
        h.stop()


def client_context(lab_pki: Path, cert: str | None = None, **kw) -> ssl.SSLContext:
    """A client that trusts the lab CA (and presents `cert`, for mTLS)."""
    ctx = ssl.create_default_context(cafile=str(lab_pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(lab_pki / f"{cert}.pem"), str(lab_pki / f"{cert}.key"))
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx
