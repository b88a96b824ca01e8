"""TLS in the proxy: termination on http listeners, re-encryption towards backends.

Theory of operation
-------------------
*Termination.* An http listener with `tls` (mode terminate) gets a
`ServerTLS`: one `ssl.SSLContext` per certificate, all with the same
settings (minimum version, ALPN, client-certificate CA), differing only in
the certificate. The handshake starts on the default certificate's context;
OpenSSL calls `ServerTLS._on_sni` with the ClientHello's server name, which
switches the connection to the certificate for that name (exact, then a
one-label wildcard; the names come from `names:` or from the certificate's
own subjectAltName). A name with no certificate keeps the default one
(`unknown_sni: default`, the classic mismatch: the client's hostname check
fails) or fails the handshake with an `unrecognized_name` alert
(`unknown_sni: refuse`, also when the client sends no name).

Accepting is done by `TLSAccept`: when a connection is accepted (before the
loop reads from it) it puts the event loop's own SSLProtocol (uvloop's C
one) under it, the way `create_server(ssl=...)` does, but keeps the
handshake's outcome: on success the decrypted transport goes to the
listener's normal `L7Connection`, with `scheme https` and a `tls` dict (name,
version, cipher, ALPN, certificate served, client certificate) that every
request event of the connection carries; a failed handshake never reaches
HTTP and is reported as one `ConnectionEvent` (kind "tls", the reason, the
name the client asked for), where `create_server(ssl=...)` would only
debug-log it.

Knowing the server name of a *failed* handshake needs one trick: the SNI
callback only sees the `SSLObject`, created inside the SSLProtocol.
`_LabContext.wrap_bio` hands each new object to the `_Handshake` of the
connection being accepted through a ContextVar set around that (synchronous)
set-up.

*Re-encryption.* A pool (or backend) with `tls` gets a `ClientTLS`: a client
context that verifies the backend's certificate against `ca` (default: the
lab CA) and `server_name` (default: the backend's name), or, with
`verify: false`, verifies nothing, and then every new connection publishes a
Warning event (the lab allows it; it must never look normal). The L7 data
plane connects in two steps (TCP, then `start_tls`), so a handshake failure
is told apart from a refused connection: 502 `backend-tls`, the reason in
the request event and X-LBLab-Error.

Files are read here, not in proxy.config: `build_server_tls` and
`build_upstream_tls` raise `ConfigError` with the config path of a file that
cannot be read or used, so a bad file refuses a config (or stops a start)
with a message saying what to change.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import ssl
import time

from proxy import pki
from proxy.config import Config, ConfigError, ListenerConfig, ListenerTLS, UpstreamTLS
from proxy.events import ConnectionEvent
from proxy.sni import match_name, normalise, wildcard_covers

log = logging.getLogger("proxy.tls")

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# ---------------------------------------------------------------- files

def _file(ref: str, where: str, errors: list, what: str) -> str | None:
    path = pki.resolve(ref)
    if not path.is_file():
        why = "no such file" if not path.exists() else "not a file"
        errors.append((where, f"cannot read {what} {ref} ({path}): {why}; {pki.missing_hint(ref)}"))
        return None
    if not os.access(path, os.R_OK):
        errors.append((where, f"cannot read {what} {ref} ({path}): permission denied"))
        return None
    return str(path)


def _signature(paths) -> tuple:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((p, None, None))
    return tuple(out)


def ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.strerror or str(exc)
        return str(reason).lower().replace("_", " ")
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the peer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def subject_text(cert: dict | None) -> str | None:
    """getpeercert()'s subject as 'CN=alice,O=LBLab'."""
    if not cert:
        return None
    parts = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            short = {"commonName": "CN", "organizationName": "O",
                     "organizationalUnitName": "OU", "countryName": "C"}.get(key, key)
            parts.append(f"{short}={value}")
    return ",".join(reversed(parts)) or None


# ---------------------------------------------------------------- termination

_HANDSHAKE: contextvars.ContextVar["_Handshake | None"] = contextvars.ContextVar(
    "lblab_tls_handshake", default=None)


class _Handshake:
    """What one server-side handshake learned (filled by wrap_bio and the SNI callback)."""

    __slots__ = ("sslobj", "outgoing")

    def __init__(self):
        self.sslobj = None
        self.outgoing = None  # the SSL layer's outgoing MemoryBIO (alerts wait there)


class _LabContext(ssl.SSLContext):
    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None,
                 session=None):
        obj = super().wrap_bio(incoming, outgoing, server_side=server_side,
                               server_hostname=server_hostname, session=session)
        holder = _HANDSHAKE.get()
        if holder is not None:
            holder.sslobj = obj
            holder.outgoing = outgoing
        return obj


class _Cert:
    __slots__ = ("label", "names", "context", "info", "default")

    def __init__(self, label, names, context, info, default):
        self.label = label
        self.names = names
        self.context = context
        self.info = info
        self.default = default


class ServerTLS:
    """A listener's certificates and settings, as SSLContexts chosen by server name."""

    def __init__(self, listener: str, settings: ListenerTLS):
        self.listener = listener
        self.settings = settings
        self.unknown_sni = settings.unknown_sni
        self.client_auth = settings.client_auth_mode
        errors: list[tuple[str, str]] = []
        where = f"listeners.{listener}.tls"
        files: list[str] = []
        client_ca = None
        if settings.client_ca is not None:
            client_ca = _file(settings.client_ca, f"{where}.client_ca", errors, "client CA")
            if client_ca:
                files.append(client_ca)
        self.certs: list[_Cert] = []
        for i, cc in enumerate(settings.certificates):
            cwhere = f"{where}.certificates[{i}]"
            cert_ref, key_ref = cc.files
            if cc.pki is not None:
                found: list = []
                cert_path = _file(cert_ref, f"{cwhere}.pki", found, "certificate")
                key_path = _file(key_ref, f"{cwhere}.pki", found, "key")
                if found:  # one message for the pair
                    errors.append(found[0])
                    continue
            else:
                cert_path = _file(cert_ref, f"{cwhere}.cert", errors, "certificate")
                key_path = _file(key_ref, f"{cwhere}.key", errors, "key")
            if not cert_path or not key_path:
                continue
            files += [cert_path, key_path]
            try:
                context = self._context(client_ca)
                context.load_cert_chain(cert_path, key_path)
            except ssl.SSLError as exc:
                errors.append((cwhere, f"cannot use {cert_ref} with {key_ref}: "
                               f"{ssl_reason(exc)} (is the key the certificate's own?)"))
                continue
            except OSError as exc:
                errors.append((cwhere, f"cannot load {cert_ref}: {exc.strerror or exc}"))
                continue
            try:
                info = pki.describe(pki.resolve(cert_ref))
                names = cc.names if cc.names is not None else pki.dns_names(pki.resolve(cert_ref))
            except Exception as exc:  # not PEM, unreadable extensions...
                errors.append((cwhere, f"cannot read the names in {cert_ref}: {exc}"))
                continue
            if not names:
                errors.append((cwhere, f"{cert_ref} names no server (no DNS subjectAltName); "
                               "give names: [...]"))
                continue
            self.certs.append(_Cert(cc.label, [normalise(n) for n in names], context, info,
                                    cc.default))
        if errors:
            raise ConfigError(errors)
        if client_ca is not None:
            # Every context verifies client certificates (the SNI switch changes contexts).
            for cert in self.certs:
                cert.context.verify_mode = (ssl.CERT_REQUIRED if self.client_auth == "required"
                                            else ssl.CERT_OPTIONAL)
        self.default = next((c for c in self.certs if c.default), self.certs[0])
        self.signature = _signature(files)
        for cert in self.certs:
            cert.context.sni_callback = self._on_sni

    def _context(self, client_ca: str | None) -> ssl.SSLContext:
        ctx = _LabContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = VERSIONS[self.settings.min_version]
        if self.settings.alpn:
            ctx.set_alpn_protocols(list(self.settings.alpn))
        ctx.options |= ssl.OP_NO_COMPRESSION
        if client_ca is not None:
            ctx.load_verify_locations(client_ca)
        return ctx

    @property
    def context(self) -> ssl.SSLContext:
        """The context a handshake starts on (the default certificate)."""
        return self.default.context

    def choose(self, server_name: str | None) -> tuple["_Cert | None", str]:
        """(certificate, how): how is exact | wildcard | default | refused."""
        if server_name:
            name = normalise(server_name)
            for cert in self.certs:
                if name in cert.names:
                    return cert, "exact"
            for cert in self.certs:
                if any(wildcard_covers(n, name) for n in cert.names):
                    return cert, "wildcard"
        if self.unknown_sni == "refuse":
            return None, "refused"
        return self.default, "default"

    def _on_sni(self, sslobj, server_name, context):
        cert, how = self.choose(server_name)
        sslobj.lblab_sni = server_name
        sslobj.lblab_how = how
        sslobj.lblab_cert = cert.label if cert is not None else None
        if cert is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        if cert.context is not context:
            sslobj.context = cert.context
        return None

    def describe(self) -> dict:
        return {
            "mode": "terminate",
            "min_version": self.settings.min_version,
            "alpn": list(self.settings.alpn),
            "unknown_sni": self.unknown_sni,
            "client_auth": self.client_auth,
            "certificates": [{"label": c.label, "names": c.names, "default": c is self.default,
                              "subject": c.info["subject"], "issuer": c.info["issuer"],
                              "not_after": c.info["not_after"]} for c in self.certs],
        }


def build_server_tls(name: str, listener: ListenerConfig,
                     previous: ServerTLS | None = None) -> ServerTLS | None:
    """The termination contexts of one listener (None without tls terminate).

    Reuses `previous` when its settings and files did not change."""
    tls = listener.tls
    if tls is None or tls.mode != "terminate" or listener.protocol != "http":
        return None
    if previous is not None and previous.settings == tls:
        paths = [p for p, _m, _s in previous.signature]
        if _signature(paths) == previous.signature:
            return previous
    return ServerTLS(name, tls)


def connection_info(sslobj, server: ServerTLS) -> dict:
    """What a terminated connection's events say about its TLS."""
    cipher = sslobj.cipher()
    info = {
        "mode": "terminate",
        "sni": getattr(sslobj, "lblab_sni", None),
        "certificate": getattr(sslobj, "lblab_cert", server.default.label),
        "matched": getattr(sslobj, "lblab_how", "default"),
        "version": sslobj.version(),
        "cipher": cipher[0] if cipher else None,
        "alpn": sslobj.selected_alpn_protocol(),
    }
    if server.client_auth is not None:
        info["client_cert"] = subject_text(sslobj.getpeercert())
    return info


_SSL_PROTOCOL: dict[type, type] = {}


def _ssl_protocol_class(loop):
    """The event loop's own SSLProtocol (uvloop's C one, or asyncio's)."""
    cls = _SSL_PROTOCOL.get(type(loop))
    if cls is None:
        if type(loop).__module__.startswith("uvloop"):
            from uvloop.loop import SSLProtocol as cls
        else:
            from asyncio.sslproto import SSLProtocol as cls
        _SSL_PROTOCOL[type(loop)] = cls
    return cls


class TLSAccept(asyncio.Protocol):
    """Puts TLS under one accepted connection, then hands it to `make()` (an L7Connection).

    `connection_made` runs before the loop reads the socket, so the TLS layer
    is in place before the first byte arrives (loop.start_tls, awaited from a
    task, would come too late on uvloop and lose the ClientHello). After the
    handshake the L7Connection gets `connection_made(tls_transport)`, with
    `.tls` (connection_info) and `.scheme_b = b"https"` set first; a failed
    handshake becomes one ConnectionEvent (kind "tls") with the reason.
    """

    kind = "tls-handshake"  # for GET /state's connection counts

    def __init__(self, server, bound, make):
        self.server = server
        self.bound = bound
        self.make = make
        self.transport = None
        self.client = "?"
        self.started = 0.0
        self.holder = _Handshake()
        self.done = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.started = time.monotonic()
        peer = transport.get_extra_info("peername")
        if peer:
            ip, port = peer[0], peer[1]
            self.client = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        loop = self.server.loop
        tls: ServerTLS = self.bound.tls
        waiter = loop.create_future()
        token = _HANDSHAKE.set(self.holder)  # wrap_bio, called below, records the SSLObject
        try:
            protocol = _ssl_protocol_class(loop)(
                loop, _Established(self), tls.context, waiter, server_side=True,
                call_connection_made=True,
                ssl_handshake_timeout=self.bound.config.timeouts.tls_handshake)
            transport.set_protocol(protocol)
            protocol.connection_made(_AlertFirst(transport, self.holder))
        finally:
            _HANDSHAKE.reset(token)
        waiter.add_done_callback(self._handshake_done)
        self.server.connections.add(self)

    def established(self, transport) -> None:
        """The handshake succeeded: the listener's protocol takes the connection."""
        self.done = True
        self.server.connections.discard(self)
        conn = self.make()
        sslobj = transport.get_extra_info("ssl_object")
        conn.scheme_b = b"https"
        conn.tls = (connection_info(sslobj, self.bound.tls) if sslobj is not None
                    else {"mode": "terminate"})
        transport.set_protocol(conn)
        conn.connection_made(transport)

    def _handshake_done(self, waiter: asyncio.Future) -> None:
        if waiter.cancelled():
            exc: BaseException = ConnectionAbortedError("handshake cancelled")
        else:
            exc = waiter.exception()
        if exc is None:
            return
        self.done = True
        self.server.connections.discard(self)
        self._close()
        self._failed(exc, self.holder.sslobj)

    def _failed(self, exc: BaseException, sslobj) -> None:
        reason = ssl_reason(exc)
        how = getattr(sslobj, "lblab_how", None)
        sni = getattr(sslobj, "lblab_sni", None)
        # The client sent an alert (it refused our certificate), or went away.
        by_client = ("alert" in reason or isinstance(exc, ConnectionResetError)
                     or "eof" in reason)
        if how == "refused":
            what = f"server name {sni!r}" if sni else "a ClientHello without a server name"
            reason = (f"no certificate for {what} (tls.unknown_sni: refuse): handshake "
                      "refused with an unrecognized_name alert")
            by_client = False
        elif "taking longer" in reason or isinstance(exc, TimeoutError):
            reason = (f"not complete within {self.bound.config.timeouts.tls_handshake:g}s "
                      "(timeouts.tls_handshake)")
            by_client = False
        elif "unsupported protocol" in reason or "version too low" in reason:
            reason = (f"the client offers no TLS version at or above "
                      f"{self.bound.tls.settings.min_version} (tls.min_version)")
            by_client = False
        elif "peer did not return a certificate" in reason or "certificate required" in reason:
            reason = "the client sent no certificate (tls.client_auth: required)"
            by_client = False
        elif "certificate verify failed" in reason:
            reason = f"the client's certificate was refused ({reason})"
            by_client = False
        info = {"mode": "terminate", "sni": sni, "certificate": getattr(sslobj, "lblab_cert", None),
                "matched": how, "error": reason}
        try:
            self.server.bus.publish(ConnectionEvent(
                connection_id=self.server.request_ids.next(), listener=self.bound.name,
                client=self.client, kind="tls", tls=info,
                duration_ms=round((time.monotonic() - self.started) * 1000, 3),
                closed_by="client" if by_client else "proxy",
                error=f"TLS handshake failed: {reason}"))
        except Exception:
            log.exception("publishing a TLS failure event failed")

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    # Server stop: a connection still in its handshake is simply closed.
    def shutdown(self) -> None:
        pass

    def abort(self) -> None:
        self._close()


class _AlertFirst:
    """The TCP transport as the SSL layer sees it, except for one thing.

    When a handshake fails, the SSL layers of asyncio and uvloop close the TCP
    connection at once (`_force_close`) and the alert OpenSSL just produced
    (unrecognized_name, certificate_required...) is lost: the client sees a
    bare EOF. Here that alert is sent first, then the connection closes, so
    `openssl s_client` and browsers show the real reason. Every other method
    is the transport's own (the busy ones bound once: no cost per call).
    """

    def __init__(self, transport, holder: _Handshake):
        self._transport = transport
        self._holder = holder
        self.write = transport.write
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading
        self.get_extra_info = transport.get_extra_info

    def __getattr__(self, name):
        return getattr(self._transport, name)

    def _force_close(self, exc) -> None:
        transport = self._transport
        outgoing = self._holder.outgoing
        pending = outgoing.read() if outgoing is not None and outgoing.pending else b""
        if pending and not transport.is_closing():
            transport.write(pending)
            transport.close()  # after the alert
            return
        transport._force_close(exc)


class _Established(asyncio.Protocol):
    """The SSL layer's application protocol until the handshake is done."""

    __slots__ = ("accept",)

    def __init__(self, accept: TLSAccept):
        self.accept = accept

    def connection_made(self, transport) -> None:
        self.accept.established(transport)


# ---------------------------------------------------------------- re-encryption

class ClientTLS:
    """How the proxy speaks TLS to one backend (a pool's or a backend's `tls`)."""

    __slots__ = ("settings", "context", "h2_context", "server_name", "verify", "ca_label",
                 "files", "signature")

    def __init__(self, settings: UpstreamTLS, where: str, backend_name: str):
        self.settings = settings
        self.verify = settings.verify
        self.server_name = settings.server_name or backend_name
        self.files: list[str] = []
        self.ca_label = None
        ca_path = None
        if settings.verify:
            errors: list = []
            ca_path = _file(settings.ca_file, f"{where}.ca", errors, "CA")
            if errors:
                raise ConfigError(errors)
            self.files.append(ca_path)
            self.ca_label = settings.ca_file
        # Pools with `protocol: h2` offer only h2 by ALPN (proxy/http2/upstream.py);
        # the others only http/1.1. Same CA, same checks.
        self.context = self._context(["http/1.1"], ca_path, where)
        self.h2_context = self._context(["h2"], ca_path, where)
        self.signature = _signature(self.files)

    def _context(self, alpn: list[str], ca_path: str | None, where: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = VERSIONS[self.settings.min_version]
        ctx.set_alpn_protocols(alpn)
        if ca_path is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        try:
            ctx.load_verify_locations(ca_path)
        except ssl.SSLError as exc:
            raise ConfigError([(f"{where}.ca", f"{self.settings.ca_file} is not a PEM CA "
                                f"certificate: {ssl_reason(exc)}")]) from None
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def info(self, sslobj) -> dict:
        out = {"server_name": self.server_name, "verified": self.verify}
        if sslobj is not None:
            out["version"] = sslobj.version()
            cert = sslobj.getpeercert() if self.verify else None
            if cert:
                out["subject"] = subject_text(cert)
        return out

    def warning(self, pool: str, backend) -> str:
        return (f"TLS to backend {backend.name} ({backend.address}) of pool {pool} is NOT "
                "verified (tls.verify: false): any server on the path could pose as it; "
                "set verify: true with the lab CA")


def build_upstream_tls(config: Config, previous: dict | None = None) -> dict:
    """{(pool, backend): ClientTLS} for every backend that speaks TLS.

    Backends with the same settings share one ClientTLS (and its SSLContext);
    one from `previous` is reused while its settings and CA file are unchanged.
    """
    out: dict = {}
    errors: list = []
    shared: dict = {}
    old = {}
    for client in (previous or {}).values():
        old[(client.settings, client.server_name)] = client
    for pname, pool in config.pools.items():
        for i, backend in enumerate(pool.backends):
            settings = pool.backend_tls(backend)
            if settings is None:
                continue
            where = (f"pools.{pname}.backends[{i}].tls" if backend.tls is not None
                     else f"pools.{pname}.tls")
            name = settings.server_name or backend.name
            key = (settings, name)
            client = shared.get(key)
            if client is None:
                reuse = old.get(key)
                if reuse is not None and _signature(reuse.files) == reuse.signature:
                    client = reuse
                else:
                    try:
                        client = ClientTLS(settings, where, backend.name)
                    except ConfigError as exc:
                        errors += exc.errors
                        continue
                shared[key] = client
            out[(pname, backend.name)] = client
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    return out


def check_files(config: Config) -> list[tuple[str, str]]:
    """Every certificate, key and CA of `config` that cannot be used, with its path
    (what a start or an apply would refuse; for `python -m proxy --check`)."""
    errors: list[tuple[str, str]] = []
    for name, listener in config.listeners.items():
        try:
            build_server_tls(name, listener)
        except ConfigError as exc:
            errors += exc.errors
    try:
        build_upstream_tls(config)
    except ConfigError as exc:
        errors += exc.errors
    return errors


def listener_view(name: str, listener: ListenerConfig, server_tls: ServerTLS | None) -> dict:
    """TLS mode of a listener for GET /state (what the page shows per listener)."""
    tls = listener.tls
    if tls is None:
        return {"mode": "none"}
    if tls.mode == "passthrough":
        return {"mode": "passthrough", "sni": dict(tls.sni), "default_pool": listener.pool,
                "unknown_sni": tls.unknown_sni}
    if server_tls is not None:
        return server_tls.describe()
    return {"mode": "terminate"}


__all__ = ["ClientTLS", "ServerTLS", "TLSAccept", "build_server_tls",
           "build_upstream_tls", "check_files", "connection_info", "listener_view", "match_name",
           "subject_text"]
