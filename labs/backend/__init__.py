"""Toy backends for LBLab: small real HTTP/1.1 servers with fault knobs (no Django here);
optionally over TLS, behind the PROXY protocol, or as a line-based TCP game (``--mode tcp``).

Start one with ``python -m labs.backend --name b1 --port 9001``; the endpoints, the faults
and the CLI are described in ``labs/backend/__main__.py`` and ``labs/backend/README.md``.
Tests elsewhere spawn real backends with ``labs.backend.testing.start_backend``.

This package imports nothing on purpose: every backend is its own process and a dozen of
them should stay cheap.
"""
