import uuid

import pytest

from labs.backend.testing import start_backend

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def shared_backend():
    """One real backend process (memory sessions) shared by the end-to-end tests."""
    with start_backend("t1") as backend:
        yield backend


@pytest.fixture
def backend(shared_backend):
    """The shared backend with no faults set, before and after the test."""
    assert shared_backend.alive, shared_backend.output()
    shared_backend.clear_faults()
    yield shared_backend
    if shared_backend.alive:
        shared_backend.clear_faults()


@pytest.fixture
def redis_prefix():
    """A key prefix of our own in the real Redis, deleted afterwards."""
    import redis

    prefix = f"lblab:test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    client.ping()
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


class TLSFiles:
    """A trustme CA, a server certificate, a client certificate, and a second (wrong) CA."""

    def __init__(self, directory):
        import trustme

        self.dir = directory
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1", "shop.example", "api.example")
        client_ca = trustme.CA()
        client = client_ca.issue_cert("alice@example.org", common_name="alice")
        wrong = trustme.CA()
        self.ca = self._write("ca.pem", ca.cert_pem)
        self.cert = self._write("server.pem", *server.cert_chain_pems)
        self.key = self._write("server.key", server.private_key_pem)
        self.client_ca = self._write("client-ca.pem", client_ca.cert_pem)
        self.client_cert = self._write("client.pem", *client.cert_chain_pems)
        self.client_key = self._write("client.key", client.private_key_pem)
        self.wrong_ca = self._write("wrong-ca.pem", wrong.cert_pem)

    def _write(self, name, *blobs):
        path = self.dir / name
        path.write_bytes(b"".join(b.bytes() for b in blobs))
        return str(path)

    def server_args(self, *more):
        return ("--tls", "--cert", self.cert, "--key", self.key, *more)

    def client_context(self, cafile=None, with_cert=False):
        import ssl

        ctx = ssl.create_default_context(cafile=cafile or self.ca)
        if with_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    return TLSFiles(tmp_path_factory.mktemp("tls"))
