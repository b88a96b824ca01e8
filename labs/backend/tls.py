"""TLS for the toy backends: the server context, and what a connection negotiated.

Imported only with ``--tls`` (``ssl`` costs memory a plain backend does not need to pay).

The SNI a client sent is not kept by ``ssl`` after the handshake, so the context's
``sni_callback`` records it on the connection's ``SSLObject`` (attribute ``lblab_sni``);
``connection_info`` reads it back with the version, cipher, ALPN and client certificate.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

_SNI_ATTR = "lblab_sni"

# Short names for certificate subjects, as in RFC 4514 / openssl.
_RDN_SHORT = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
    "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
    "emailAddress": "emailAddress", "domainComponent": "DC", "userId": "UID",
}


class TLSConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file."""


def _record_sni(ssl_object, server_name, context) -> None:
    setattr(ssl_object, _SNI_ATTR, server_name)
    # Returning None continues the handshake with this context's certificate.


def server_context(cert: str, key: str | None = None, client_ca: str | None = None,
                   alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """A server-side context: TLS 1.2 minimum, the given chain, ALPN, optional client certs."""
    for flag, path in (("--cert", cert), ("--key", key), ("--client-ca", client_ca)):
        if path is not None and not os.path.isfile(path):
            raise TLSConfigError(f"{flag}: no such file: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        which = f"--cert {cert} and --key {key}" if key else f"--cert {cert} (no --key given)"
        raise TLSConfigError(f"{which}: cannot load the certificate chain and private key "
                             f"({getattr(exc, 'reason', None) or exc}); --cert wants PEM "
                             "(certificate first, then intermediates), --key the matching "
                             "PEM private key (or put both in the --cert file)") from None
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(f"--client-ca {client_ca}: not a PEM CA bundle ({getattr(exc, 'reason', None) or exc})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    ctx.sni_callback = _record_sni
    return ctx


def _name(rdns) -> str:
    """RFC 4514 form, most specific first (``CN=alice,OU=...,O=...``), as openssl -nameopt
    RFC2253, Go and the cryptography package print it."""
    parts = []
    for rdn in reversed(rdns or ()):
        parts.append("+".join(f"{_RDN_SHORT.get(key, key)}={_escape(value)}" for key, value in rdn))
    return ",".join(parts)


def _escape(value: str) -> str:
    for ch in '\\,+"<>;':
        value = value.replace(ch, "\\" + ch)
    return value


def connection_info(ssl_object) -> dict[str, Any] | None:
    """What the TLS handshake of one connection settled on, for the echo."""
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    info: dict[str, Any] = {
        "version": ssl_object.version(),
        "cipher": cipher[0] if cipher else None,
        "sni": getattr(ssl_object, _SNI_ATTR, None),
        "alpn": ssl_object.selected_alpn_protocol(),
        "client_cert": None,
    }
    peer = ssl_object.getpeercert()
    if peer:  # only with --client-ca: otherwise no certificate is asked for
        info["client_cert"] = {
            "subject": _name(peer.get("subject")),
            "issuer": _name(peer.get("issuer")),
            "serial": peer.get("serialNumber"),
            "not_after": peer.get("notAfter"),
        }
    return info
