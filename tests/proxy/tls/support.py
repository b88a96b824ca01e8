"""TLS test helpers: requests over real TLS clients (Python ssl, openssl s_client)."""
from __future__ import annotations

import socket
import ssl
import subprocess
from dataclasses import dataclass

from tests.proxy.e2e.support import Response, parse_response, read_until_close

TIMEOUT = 10.0


@dataclass
class TLSResult:
    response: Response
    subject: dict  # the certificate the client got: {"commonName": ...}
    der: bytes  # that certificate, DER
    version: str
    alpn: str | None


def _subject(cert: dict) -> dict:
    return {k: v for rdn in cert.get("subject", ()) for k, v in rdn}


def tls_request(port: int, server_name: str | None, ctx: ssl.SSLContext, path: str = "/",
                headers: dict | None = None, host: str | None = None) -> TLSResult:
    """One HTTP/1.1 request over a fresh TLS connection with this SNI (Connection: close)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname=server_name) as sock:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host or server_name or 'localhost'}",
                 "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = read_until_close(sock)
        cert = sock.getpeercert() or {}
        der = sock.getpeercert(binary_form=True)
        return TLSResult(parse_response(data), _subject(cert), der, sock.version(),
                         sock.selected_alpn_protocol())


def peer_certificate(port: int, server_name: str | None) -> tuple[dict, bytes]:
    """The certificate served for this name, without verifying anything."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname=server_name) as sock:
        der = sock.getpeercert(binary_form=True)
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    return {"subject": cert.subject.rfc4514_string()}, der


def s_client(port: int, server_name: str | None, ca: str | None = None,
             extra: list[str] | None = None, send: bytes = b"") -> str:
    """`openssl s_client` output (stdout + stderr)."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief"]
    if server_name:
        cmd += ["-servername", server_name]
    else:
        cmd += ["-noservername"]
    if ca:
        cmd += ["-CAfile", ca, "-verify_return_error"]
        if server_name:
            cmd += ["-verify_hostname", server_name]
    cmd += extra or []
    done = subprocess.run(cmd, input=send, capture_output=True, timeout=30)
    return (done.stdout + done.stderr).decode("utf-8", "replace")


def pem_der(path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(open(path, encoding="ascii").read())
