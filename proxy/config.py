"""The proxy's configuration: YAML validated once into frozen typed objects.

Shape (objects refer to each other by name, as in Traefik's dynamic config):

    admin:     where the admin API listens (token needed beyond loopback)
    listeners: name -> bind address, protocol (http|tcp), the routes it tries
               (http) or the pool it relays to (tcp); optional `tls`: terminate
               (http: certificates by SNI, min version, ALPN, mTLS) or
               passthrough (tcp: route on the ClientHello's server name)
    routes:    name -> match (host, path, header, method, query, cookie) + one action
    pools:     name -> balancer, backends, stickiness, health, timeouts, draining,
               `tls` towards the backends (re-encryption), `proxy_protocol` v1|v2

`load_config(text)` returns a `Config` or raises `ConfigError` carrying *every*
problem with its path ("pools.web.balancer.algorithm: ..."), both the ones
pydantic finds in a single object and the cross-object ones found afterwards
(dangling names, impossible pairings such as a cookie-sticky pool behind a TCP
listener). A refused config changes nothing: callers swap only on success.

Certificate and CA files are *named* here (a path, or `pki:<file>` in the lab
PKI made by `python -m proxy pki init`), not read: validation stays pure, so
the shipped examples validate on a machine without a PKI. The server reads
them when it starts or applies a config (proxy/tls.py), and a file it cannot
use refuses that config with the same kind of path
(`listeners.web.tls.certificates[0].cert: cannot read ...`).
"""
from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from proxy.configtext import (
    MAX_BYTES,
    TextError,
    check_shape,
    excerpt,
    parse_bytes,
    parse_text,
)
from proxy.durations import format_duration, parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration),
                     PlainSerializer(format_duration, when_used="json")]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]

# Upper bounds on counts no real deployment reaches; they keep validation, and
# what the proxy builds from a config (rings, tables, probes), bounded in time.
MAX_LISTENERS = 64
MAX_ROUTES = 1000
MAX_POOLS = 1000
MAX_BACKENDS = 1000  # per pool
MAX_ITEMS = 100  # split targets, certificates, expect_status, match entries...


# ---------------------------------------------------------------- strings

_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")


def _valid_host(host: str) -> str | None:
    """The host in canonical form (IP literal or DNS name), or None."""
    if not host or len(host) > 253:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if all(_HOST_LABEL.match(label) for label in labels) and not host.replace(".", "").isdigit():
        return host
    return None


def _parse_address(value: object, allow_port_zero: bool = True) -> tuple[str, int]:
    example = "'127.0.0.1:8080' (IPv6: '[::1]:8080')"
    if isinstance(value, (tuple, list)):
        # Python callers (and tests) pass (host, port); data from a file is a string.
        if len(value) != 2 or not isinstance(value[0], str) or isinstance(value[1], bool) \
                or not isinstance(value[1], int):
            raise ValueError(f"expected 'host:port' such as {example}, got {excerpt(value)}")
        host, port = value
        host = host.strip("[]") if host.startswith("[") and host.endswith("]") else host
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            host, sep, port_text = text[1:].partition("]:")
            if not sep:
                raise ValueError(f"expected '[IPv6]:port' such as '[::1]:8080', got "
                                 f"{excerpt(value)}")
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or not host:
                raise ValueError(f"expected 'host:port' such as {example}, got {excerpt(value)}")
            if ":" in host:
                raise ValueError(f"{excerpt(value)} has more than one ':'; write 'host:port' "
                                 "with one port, and an IPv6 address in brackets: '[::1]:8080'")
        if not _PORT.match(port_text):
            raise ValueError(f"the port in {excerpt(value)} must be a number from 0 to 65535")
        port = int(port_text)
    else:
        raise ValueError(f"expected 'host:port' such as {example}, got {excerpt(value)}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0-65535")
    if port == 0 and not allow_port_zero:
        raise ValueError("port 0 cannot be connected to; give the backend's real port")
    canonical = _valid_host(host)
    if canonical is None:
        raise ValueError(f"{excerpt(host)} is not a host: write an IP address such as "
                         "127.0.0.1 or [::1], or a DNS name such as localhost")
    return canonical, port


def _format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


Address = Annotated[tuple[str, int], BeforeValidator(_parse_address),
                    PlainSerializer(_format_address, when_used="json")]
# A backend's address is connected to: port 0 means nothing there.
BackendAddress = Annotated[tuple[str, int],
                           BeforeValidator(lambda v: _parse_address(v, allow_port_zero=False)),
                           PlainSerializer(_format_address, when_used="json")]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_controls(what: str, allow: str = "", ascii_only: bool = False):
    """A validator refusing CR, LF, NUL and the other control characters in a string
    that reaches the wire (a header line, a request line): one would end the line
    there and let the rest of the value become a header or request of its own."""
    def check(value):
        if not isinstance(value, str):
            return value
        for ch in _CONTROL.findall(value):
            if ch not in allow:
                raise ValueError(f"{what} contains the control character {ch!r} in "
                                 f"{excerpt(value)}; CR, LF and NUL would end the line on "
                                 "the wire and inject what follows: remove it")
        if ascii_only and not value.isascii():
            raise ValueError(f"{what} must be ASCII, got {excerpt(value)}; percent-encode "
                             "other characters (%C3%A9 for \u00e9)")
        return value
    return BeforeValidator(check)


def _wire(what: str, max_length: int, ascii_only: bool = True, allow: str = ""):
    return Annotated[str, _no_controls(what, allow=allow, ascii_only=ascii_only),
                     Field(max_length=max_length)]


# RFC 9110 token (header names, methods, cookie names).
Token = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")]
HeaderValue = _wire("a header value", 1024)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not silently become a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- admin

class AdminConfig(Strict):
    listen: Address = ("127.0.0.1", 9900)
    # Sent as "Authorization: Bearer <token>": visible ASCII, no spaces.
    token: Annotated[str, Field(pattern=r"^[!-~]{1,1024}$")] | None = None
    # Events kept for GET /requests/<id> lookups.
    request_history: int = Field(10_000, ge=100, le=1_000_000)

    @model_validator(mode="after")
    def _token_beyond_loopback(self):
        if not is_loopback(self.listen[0]) and not self.token:
            raise ValueError(
                f"admin listens on {self.listen[0]}, beyond loopback: set admin.token"
            )
        return self


# ---------------------------------------------------------------- listeners

class ListenerTimeouts(Strict):
    """Client-facing timeouts."""

    client_header: Duration = 10.0  # whole request head must arrive within this (408)
    request_body: Duration = 60.0  # no body byte for this long (408)
    client_idle: Duration = 60.0  # keep-alive connection idle between requests
    tunnel_idle: Duration = 300.0  # upgraded (WebSocket) or TCP relay idle
    # Slow request bodies (helper A, issue 11; 408 body-too-slow, docs/errors.md):
    # the whole body within request_body_total (0 = no limit), and on average at
    # least min_body_rate bytes/s after a grace of request_body (0 = no minimum).
    request_body_total: Duration = 0.0
    min_body_rate: int = Field(256, ge=0, le=1 << 30)
    # TLS termination: the handshake must complete within this; TLS passthrough:
    # the ClientHello (to read its server name) must arrive within this.
    tls_handshake: Duration = 10.0


class Limits(Strict):
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)  # 431 beyond
    max_body_bytes: int = Field(100 * 1024 * 1024, ge=0, le=1 << 40)  # 413 beyond
    max_connections: int = Field(10_000, ge=1, le=1_000_000)


# A file the server reads: a path, or `pki:<file>` for a file of the lab PKI
# (`pki:ca.pem` is <state dir>/pki/ca.pem; see proxy/pki.py).
FileRef = Annotated[str, _no_controls("a file name"), Field(min_length=1, max_length=4096)]
TLSVersion = Literal["1.2", "1.3"]
_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def _server_name(value: str) -> str:
    name = value.strip().rstrip(".").lower()
    if len(name) > 253 or not _HOSTNAME.match(name):
        raise ValueError(f"{excerpt(value)} is not a server name: write a DNS name such as "
                         "www.lab.test, or a one-label wildcard such as *.lab.test")
    return name


class CertificateConfig(Strict):
    """One certificate the proxy serves: from the lab PKI, or a cert and key file."""

    pki: Annotated[str, Field(pattern=r"^[A-Za-z0-9*][A-Za-z0-9_.*-]{0,252}$")] | None = None  # "www.lab.test" = pki:www.lab.test.pem + pki:www.lab.test.key
    cert: FileRef | None = None
    key: FileRef | None = None
    # Server names it is chosen for (exact or *.wildcard); default: the names in
    # the certificate itself (its subjectAltName DNS entries).
    names: Annotated[list[str], Field(max_length=MAX_ITEMS)] | None = None
    default: bool = False  # served when no name matches (default: the first certificate)

    @model_validator(mode="after")
    def _one_source(self):
        if self.pki is not None and (self.cert is not None or self.key is not None):
            raise ValueError("give either pki: NAME (lab PKI) or cert: + key: files, not both")
        if self.pki is None and (self.cert is None or self.key is None):
            raise ValueError("a certificate needs cert: FILE and key: FILE "
                             "(or pki: NAME for one made by `python -m proxy pki init`)")
        return self

    @field_validator("names")
    @classmethod
    def _names(cls, value):
        return None if value is None else [_server_name(n) for n in value]

    @property
    def files(self) -> tuple[str, str]:
        if self.pki is not None:
            return f"pki:{self.pki}.pem", f"pki:{self.pki}.key"
        return self.cert, self.key  # type: ignore[return-value]

    @property
    def label(self) -> str:
        return self.pki or self.cert or "?"


class ListenerTLS(Strict):
    """TLS on a listener.

    mode terminate (http listeners): the proxy holds the certificates, decrypts,
    and routes on HTTP as usual; X-Forwarded-Proto becomes https.
    mode passthrough (tcp listeners): the proxy reads only the server name of
    the ClientHello, picks a pool by it (`sni`), and relays the encrypted bytes:
    the backend's own certificate reaches the client.
    """

    mode: Literal["terminate", "passthrough"] = "terminate"
    # terminate
    certificates: Annotated[list[CertificateConfig], Field(max_length=MAX_ITEMS)] = []
    min_version: TLSVersion = "1.2"
    alpn: Annotated[list[Literal["http/1.1", "h2"]], Field(min_length=1, max_length=2)] = \
        ["http/1.1"]
    client_ca: FileRef | None = None  # mTLS: client certificates must chain to this CA
    client_auth: Literal["required", "optional"] | None = None  # default with client_ca: required
    # passthrough: server name (exact or *.wildcard) -> pool; others go to listener.pool
    sni: Annotated[dict[str, Name], Field(max_length=MAX_ROUTES)] = {}
    # A server name with no certificate (terminate) or no sni entry (passthrough):
    # default = serve the default certificate / use listener.pool (the classic
    # mismatch: the client sees a certificate for another name);
    # refuse = fail the handshake with an unrecognized_name alert / close.
    unknown_sni: Literal["default", "refuse"] = "default"

    @model_validator(mode="after")
    def _fits_mode(self):
        if self.mode == "terminate":
            if not self.certificates:
                raise ValueError("tls mode terminate needs certificates: [{pki: www.lab.test}] "
                                 "(or cert: + key: files)")
            if sum(1 for c in self.certificates if c.default) > 1:
                raise ValueError("only one certificate may say default: true")
            if self.sni:
                raise ValueError("tls.sni maps names to pools for passthrough; when the proxy "
                                 "terminates TLS, route on the host with routes (match: {host})")
            if self.client_auth is not None and self.client_ca is None:
                raise ValueError(f"client_auth: {self.client_auth} needs client_ca: FILE, the CA "
                                 "client certificates must chain to (e.g. pki:ca.pem)")
        else:
            # Judged by value, not by which keys were written: GET /config writes
            # every setting, the terminate-only ones at their defaults, and that
            # export must be accepted back (PUT /config) unchanged.
            terminate_only = [name for name in ("certificates", "min_version", "alpn",
                                                "client_ca", "client_auth")
                              if getattr(self, name) != type(self).model_fields[name].default]
            if terminate_only:
                raise ValueError(
                    f"{', '.join(terminate_only)}: not with tls mode passthrough; the proxy "
                    "never decrypts there, so the backend's own TLS settings apply")
        return self

    @field_validator("sni")
    @classmethod
    def _sni_names(cls, value):
        return {_server_name(k): v for k, v in value.items()}

    @property
    def client_auth_mode(self) -> str | None:
        if self.client_ca is None:
            return None
        return self.client_auth or "required"


class HTTP2Settings(Strict):
    """HTTP/2 from clients (proxy/http2/): prior knowledge on cleartext, `h2` by ALPN
    over TLS (list it in tls.alpn). The caps answer the HTTP/2 flood advisories
    (see proxy/http2/guard.py); a client over a cap gets GOAWAY ENHANCE_YOUR_CALM."""

    max_concurrent_streams: int = Field(100, ge=1, le=10_000)
    initial_window: int = Field(65_535, ge=1024, le=2**31 - 1)  # per stream, bytes
    max_resets: int = Field(100, ge=1, le=100_000)  # RST_STREAM per period (rapid reset)
    max_control_frames: int = Field(100, ge=1, le=100_000)  # SETTINGS and PINGs per period
    max_continuation_frames: int = Field(16, ge=1, le=1000)  # per header block
    # Streams opened beyond max_concurrent_streams get RST_STREAM REFUSED_STREAM
    # (RFC 9113 5.1.2); more than this many per period: GOAWAY ENHANCE_YOUR_CALM.
    max_refused_streams: int = Field(100, ge=1, le=100_000)
    period: Duration = 10.0


def _http2_switch(value: object) -> object:
    # `http2: true` is the everyday spelling; the settings object tunes the caps.
    if value is True:
        return {}
    if value is False:
        return None
    return value


class UDPSettings(Strict):
    """UDP listeners (proxy/io/udp.py): one flow per client address and port."""

    flow_idle: Duration = 30.0  # a flow with no datagram either way for this long ends
    max_flows: int = Field(10_000, ge=1, le=1_000_000)  # new clients beyond: dropped


def _network(value):
    from proxy.trust import parse_network

    return parse_network(value)


Network = Annotated[str, BeforeValidator(_network)]


class AcceptProxyProtocol(Strict):
    """Accept a PROXY protocol header (v1 or v2) from these networks only; the
    address it names becomes the client's (proxy/io/accept.py)."""

    trusted: Annotated[list[Network], Field(min_length=1, max_length=MAX_ITEMS)]


class ForwardedTrust(Strict):
    """Whose X-Forwarded-For / Forwarded is believed (proxy/trust.py). Default: no
    one's: a client's own copies are dropped, the backend gets the peer only."""

    trusted_networks: Annotated[list[Network], Field(max_length=MAX_ITEMS)] = []
    trusted_hops: int = Field(0, ge=0, le=10)

    @model_validator(mode="after")
    def _one_rule(self):
        if self.trusted_networks and self.trusted_hops:
            raise ValueError("give trusted_networks (the proxies in front, by address) or "
                             "trusted_hops (how many proxies are in front), not both")
        return self


class ListenerConfig(Strict):
    bind: Address
    protocol: Literal["http", "tcp", "udp"] = "http"
    # http listeners: also serve HTTP/2 (true, or settings). Off: HTTP/1.1 only.
    http2: Annotated[HTTP2Settings | None, BeforeValidator(_http2_switch)] = None
    # udp listeners: flow idle timeout and flow limit.
    udp: UDPSettings | None = None
    # HTTP listeners: route names, tried by route priority (then by this order).
    routes: Annotated[list[Name], Field(max_length=MAX_ROUTES)] = []
    # TCP listeners: the pool every connection goes to (with tls passthrough:
    # the pool for names not in tls.sni, and for clients that send no name).
    pool: Name | None = None
    tls: ListenerTLS | None = None
    timeouts: ListenerTimeouts = ListenerTimeouts()
    limits: Limits = Limits()
    # Trusted client addresses (http and tcp listeners): a PROXY header from
    # the balancer in front, and (http) whose X-Forwarded-For is believed.
    proxy_protocol: AcceptProxyProtocol | None = None
    forwarded: ForwardedTrust = ForwardedTrust()
    # The zone of the balancer node this listener stands for (zone-aware routing:
    # pools.NAME.cross_zone).
    zone: Name | None = None

    @property
    def tls_mode(self) -> str:
        """none | terminate | passthrough (what the page shows per listener)."""
        return self.tls.mode if self.tls is not None else "none"


# ---------------------------------------------------------------- routes

class RouteMatch(Strict):
    """Every given condition must hold; an empty match matches everything."""

    host: Annotated[str, Field(max_length=255)] | None = None  # exact, or "*.example.com"
    path_prefix: Annotated[str, Field(max_length=2048)] | None = None
    path_regex: Annotated[str, Field(max_length=1024)] | None = None
    methods: Annotated[list[Token], Field(max_length=MAX_ITEMS)] | None = None
    # exact value; "*" means present
    headers: Annotated[dict[Token, Annotated[str, Field(max_length=1024)]],
                       Field(max_length=MAX_ITEMS)] = {}
    query: Annotated[dict[Annotated[str, Field(max_length=256)],
                          Annotated[str, Field(max_length=1024)]],
                     Field(max_length=MAX_ITEMS)] = {}
    cookies: Annotated[dict[Token, Annotated[str, Field(max_length=1024)]],
                       Field(max_length=MAX_ITEMS)] = {}

    @field_validator("path_regex")
    @classmethod
    def _compiles(cls, value):
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"path_regex does not compile: {exc}") from None
        return value

    @field_validator("path_prefix")
    @classmethod
    def _starts_with_slash(cls, value):
        if value is not None and not value.startswith("/"):
            raise ValueError(f"path_prefix must start with '/', got {excerpt(value)}")
        return value

    @field_validator("methods")
    @classmethod
    def _upper(cls, value):
        return None if value is None else [m.upper() for m in value]

    @property
    def needs_http(self) -> bool:
        return any([self.host, self.path_prefix, self.path_regex, self.methods,
                    self.headers, self.query, self.cookies])


class SplitTarget(Strict):
    pool: Name
    weight: int = Field(ge=0, le=10_000)


class Respond(Strict):
    status: int = Field(200, ge=100, le=599)
    # The body is framed by Content-Length, so a line break in it cannot start
    # a header: LF and tab are allowed (text bodies have lines); CR, NUL and the
    # other control characters are refused like everywhere else on the wire.
    body: Annotated[str, _no_controls("respond.body", allow="\n\t"),
                    Field(max_length=64 * 1024)] = ""
    content_type: _wire("respond.content_type", 256) = "text/plain; charset=utf-8"


class Redirect(Strict):
    location: Annotated[_wire("redirect.location", 2048), Field(min_length=1)]
    status: Literal[301, 302, 303, 307, 308] = 302


class RouteConfig(Strict):
    # Higher priority is tried first; ties keep the listener's order.
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    match: RouteMatch = RouteMatch()
    # Exactly one action:
    forward: Name | None = None
    split: Annotated[list[SplitTarget], Field(max_length=MAX_ITEMS)] | None = None
    respond: Respond | None = None
    redirect: Redirect | None = None
    # split: roll with a generator seeded with this (its own), so the same requests get
    # the same pools in any process; unset, the proxy's generator. Replays set it.
    seed: int | None = Field(None, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _one_action(self):
        given = [a for a in ("forward", "split", "respond", "redirect")
                 if getattr(self, a) is not None]
        if len(given) != 1:
            raise ValueError(
                "a route needs exactly one action of forward, split, respond, redirect; "
                f"got {given or 'none'}"
            )
        if self.split is not None and sum(t.weight for t in self.split) == 0:
            raise ValueError("split weights add up to 0: give at least one a weight")
        return self

    def pools(self) -> list[str]:
        if self.forward:
            return [self.forward]
        return [t.pool for t in self.split or []]


# ---------------------------------------------------------------- pools

HashSource = Literal["client_ip", "header", "cookie", "uri"]


class HashKey(Strict):
    source: HashSource = "client_ip"
    name: Token | None = None  # header or cookie name

    @model_validator(mode="after")
    def _name_when_needed(self):
        if self.source in ("header", "cookie") and not self.name:
            raise ValueError(f"hash_key.source {self.source!r} needs hash_key.name")
        return self


# Maglev builds a table of this many slots at every membership change (and
# for each eligible set it meets), on the proxy's loop: 65537 is the size the
# Maglev paper and Envoy use, and builds in a fraction of a second for 1000
# backends. A consistent-hash ring is rebuilt just as often: its points
# (virtual_nodes x backends) are bounded for the same reason.
MAX_TABLE_SIZE = 65537
MAX_RING_POINTS = 50_000


def _is_prime(n: int) -> bool:
    """Trial division; callers bound n (<= MAX_TABLE_SIZE), so this is ~1000 steps."""
    if n > MAX_TABLE_SIZE:
        raise ValueError(f"{n} is beyond the bound this check is for")
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


class BalancerConfig(Strict):
    algorithm: str = "round_robin"
    choices: int = Field(2, ge=2, le=16)  # power_of_two_choices
    hash_key: HashKey = HashKey()  # ip_hash, consistent_hash, maglev, bounded
    virtual_nodes: int = Field(160, ge=1, le=10_000)  # consistent_hash
    table_size: int = Field(65537, ge=7, le=MAX_TABLE_SIZE)  # maglev, must be prime
    load_factor: float = Field(1.25, gt=1.0, le=10.0)  # consistent_hash_bounded
    # least_response_time: the time constant its averages forget with (an
    # average this old counts for 1/e, and drifts toward the pool's), and how
    # long a backend may go without a response before one request probes it.
    decay_time: Duration = 10.0
    probe_after: Duration = 10.0
    # least_connections, least_outstanding_requests, power_of_two_choices: whose counts
    # they compare. "local": this proxy's own, live. "reported": the last load report
    # pushed through the admin API (PUT /pools/P/load): every balancer's load, but as old
    # as the report (several proxies reading one stale report herd onto one backend).
    load: Literal["local", "reported"] = "local"
    # random, weighted_random, power_of_two_choices: draw from a generator seeded with
    # this (its own per pool), so two runs of one traffic make the same draws; unset, the
    # process's generator. A counterfactual replay sets it (labs/framework/replay.py).
    seed: int | None = Field(None, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _response_time_knobs(self):
        problems = [f"{name} must be from 100ms to 1h, got {format_duration(value)}"
                    for name, value in (("decay_time", self.decay_time),
                                        ("probe_after", self.probe_after))
                    if not 0.1 <= value <= 3600]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @field_validator("algorithm")
    @classmethod
    def _known(cls, value):
        from proxy.balancers import REGISTRY

        if value not in REGISTRY:
            raise ValueError(
                f"unknown algorithm {excerpt(value)}; choose one of {', '.join(sorted(REGISTRY))}"
            )
        return value

    @field_validator("table_size")
    @classmethod
    def _prime(cls, value):
        if not _is_prime(value):
            raise ValueError(f"maglev table_size must be prime (e.g. 65537, 251), got {value}")
        return value

    def needs_http(self) -> bool:
        from proxy.balancers import REGISTRY

        return REGISTRY[self.algorithm].needs_http(self)


class StickyConfig(Strict):
    # cookie: the proxy inserts a signed cookie naming the backend.
    # app_cookie: follow the application's own session cookie (hash of its value).
    # source_ip: a stick table keyed by client address, entries expire after ttl.
    mode: Literal["cookie", "app_cookie", "source_ip"]
    cookie: Token = "LBSTICKY"
    ttl: Duration = 3600.0
    # HMAC secret for inserted cookies; when absent the proxy makes one at start.
    secret: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    table_size: int = Field(100_000, ge=1, le=10_000_000)
    # Attributes of the cookie the proxy inserts (mode cookie). secure: auto
    # adds Secure on listeners that terminate TLS (a browser would then never
    # send it over plain HTTP, so it is not forced there).
    secure: Literal["auto", "always", "never"] = "auto"
    http_only: bool = True
    same_site: Literal["Lax", "Strict", "None", "off"] = "Lax"
    path: _wire("sticky.path", 256) = "/"
    domain: Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]{1,253}$")] | None = None

    @model_validator(mode="after")
    def _same_site_none_needs_secure(self):
        if self.same_site == "None" and self.secure == "never":
            raise ValueError("same_site: None needs the Secure attribute (browsers drop the "
                             "cookie otherwise): use secure: auto or always")
        return self

    def needs_http(self) -> bool:
        return self.mode in ("cookie", "app_cookie")


class UpstreamTLS(Strict):
    """TLS from the proxy to backends (re-encryption), on a pool or one backend."""

    # Check the backend's certificate against `ca` and `server_name`. Off is
    # allowed for the lab, and then every new connection carries a warning event.
    verify: bool = True
    ca: FileRef | None = None  # default: the lab CA, pki:ca.pem
    server_name: Annotated[str, Field(max_length=253)] | None = None  # SNI sent and name checked; default: the backend's name
    min_version: TLSVersion = "1.2"

    @field_validator("server_name")
    @classmethod
    def _name(cls, value):
        return None if value is None else _server_name(value)

    @property
    def ca_file(self) -> str:
        return self.ca or "pki:ca.pem"


ProxyProtocol = Literal["v1", "v2"]


class BackendConfig(Strict):
    name: Name
    address: BackendAddress
    weight: int = Field(1, ge=0, le=1000)
    state: Literal["active", "draining", "maintenance"] = "active"
    # Override the pool's settings for this backend ("off": no PROXY header here).
    tls: UpstreamTLS | None = None
    proxy_protocol: Literal["v1", "v2", "off"] | None = None
    # HAProxy's per-server maxconn: requests in flight (http listeners) or relayed
    # connections (tcp) this backend takes at once; overrides the pool's
    # max_connections_per_backend. Beyond it: the pool's queue, else 503.
    max_connections: int | None = Field(None, ge=1, le=1_000_000)
    # Where it runs (an availability zone); a backend without a zone serves every zone.
    zone: Name | None = None
    # A backup (HAProxy `backup`, Envoy's lower priority) takes traffic only while
    # the pool's primaries are below pools.NAME.backup_threshold (see runtime.py).
    backup: bool = False


MIN_PROBE_INTERVAL = 0.01


class HealthCheckConfig(Strict):
    type: Literal["http", "tcp", "grpc", "udp"] = "http"
    # Goes into the probe's request line: visible ASCII from "/", no spaces.
    path: Annotated[str, _no_controls("health.path"),
                    Field(pattern=r"^/[!-~]{0,1023}$")] = "/health"
    # Probe this port of each backend instead of its traffic port (e.g. a TCP or
    # HTTP check beside a UDP service).
    port: int | None = Field(None, ge=1, le=65535)
    # grpc: the service asked about in grpc.health.v1.Health/Check ("" = the server).
    service: Annotated[str, _no_controls("health.service"), Field(max_length=1024)] = ""
    # udp: the datagram sent, and text the reply must contain (default: any reply).
    send: Annotated[str, Field(min_length=1, max_length=1024)] = "ping"
    expect: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    expect_status: Annotated[list[Annotated[int, Field(ge=100, le=599)]],
                             Field(min_length=1, max_length=MAX_ITEMS)] = [200]
    body_contains: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    interval: Duration = 2.0
    timeout: Duration = 1.0
    healthy_threshold: int = Field(2, ge=1, le=100)
    unhealthy_threshold: int = Field(3, ge=1, le=100)
    jitter: Duration = 0.0  # each probe is delayed by a random 0..jitter
    unhealthy_interval: Duration | None = None  # probe interval while down
    grace: Duration = 0.0  # no probe before this after a backend joins
    # http only: keep the probe's connection open and send the next GET on it.
    # Off by default (as HAProxy and Envoy): a new connection per probe also
    # proves the backend still accepts connections. See proxy.health.active.
    reuse_connection: bool = False
    # http and grpc: speak TLS to the backend with the pool's backend TLS settings
    # (CA, server name, verify; ALPN http/1.1 or h2). Unset: TLS when the pool
    # speaks TLS to the backend and the check uses the traffic port (no health.port);
    # a health.port is cleartext unless tls: true. See proxy.health.active.
    tls: bool | None = None

    @model_validator(mode="after")
    def _timeout_within_interval(self):
        # Probes are scheduled on the proxy's own loop: an interval of
        # microseconds would be a probe storm that stalls traffic.
        problems = []
        if self.interval < MIN_PROBE_INTERVAL:
            problems.append(f"health.interval must be at least 10ms, got "
                            f"{format_duration(self.interval)}")
        if self.unhealthy_interval is not None and self.unhealthy_interval < MIN_PROBE_INTERVAL:
            problems.append(f"health.unhealthy_interval must be at least 10ms, got "
                            f"{format_duration(self.unhealthy_interval)}")
        if self.timeout <= 0:
            problems.append("health.timeout must be above 0")
        if problems:
            raise ValueError("; ".join(problems))
        if self.tls and self.type not in ("http", "grpc"):
            raise ValueError(f"health.tls only applies to type: http or grpc (a {self.type} "
                             "check does not speak TLS); remove it")
        if self.reuse_connection and self.type != "http":
            raise ValueError("health.reuse_connection only applies to type: http "
                             "(a tcp check is the connection itself); remove it or "
                             "use type: http")
        return self


class OutlierConfig(Strict):
    """Passive health: eject backends from what real traffic shows (as Envoy)."""

    consecutive_5xx: int | None = Field(5, ge=1, le=100_000)
    consecutive_gateway_failure: int | None = Field(None, ge=1, le=100_000)
    failure_percentage: float | None = Field(None, gt=0, le=100)
    failure_window: Duration = 10.0
    failure_min_requests: int = Field(10, ge=1, le=1_000_000)
    base_ejection: Duration = 30.0  # grows with each ejection: base * count
    max_ejection: Duration = 300.0
    max_ejection_percent: float = Field(50, ge=0, le=100)


class PoolTimeouts(Strict):
    """Backend-facing timeouts."""

    connect: Duration = 2.0  # TCP connect (counts as a connect failure: retried)
    response_header: Duration = 30.0  # from request sent to response head (504)
    backend_idle: Duration = 30.0  # pooled keep-alive connection reuse limit


class QueueConfig(Strict):
    """Requests wait here when every eligible backend is at its connection limit
    (HAProxy maxconn + queue; see proxy/queueing.py)."""

    max_length: int = Field(100, ge=1, le=100_000)  # one more: 503 queue-full
    timeout: Duration = 5.0  # waited this long: 503 queue-timeout (sQ)

    @field_validator("timeout")
    @classmethod
    def _timeout_bound(cls, value):
        if not 0.001 <= value <= 3600:
            raise ValueError(f"queue.timeout must be from 1ms to 1h, got "
                             f"{format_duration(value)}")
        return value


class RetryBudgetConfig(Strict):
    """Retries in flight capped as a share of the pool's active requests (Envoy's
    retry_budget; see proxy/retrybudget.py)."""

    percent: float = Field(20.0, gt=0.0, le=100.0)
    min_concurrent: int = Field(3, ge=0, le=100_000)


class PoolConfig(Strict):
    balancer: BalancerConfig = BalancerConfig()
    backends: Annotated[list[BackendConfig], Field(max_length=MAX_BACKENDS)] = []
    sticky: StickyConfig | None = None
    health: HealthCheckConfig | None = None
    outlier: OutlierConfig | None = None
    timeouts: PoolTimeouts = PoolTimeouts()
    slow_start: Duration = 0.0
    deregistration_delay: Duration = 30.0
    # 0 = documented default: 503 when no backend is eligible. Above 0 = fail
    # open: when the share of eligible backends falls below it, spread over all.
    panic_threshold: float = Field(0.0, ge=0.0, le=1.0)
    retries: int = Field(1, ge=0, le=5)
    retry_budget: RetryBudgetConfig | None = None  # besides retries (per request)
    # false: a listener with a zone sends only to backends of its zone (NLB's
    # default), falling back to every zone when its own has no eligible backend;
    # true: every zone (ALB's default, and this proxy's). See proxy/zones.py.
    cross_zone: bool = True
    # Backup backends (backends[].backup) join the pick when the share of
    # eligible primaries is below this; 0 = only when no primary is eligible.
    backup_threshold: float = Field(0.0, ge=0.0, le=1.0)
    # How an http listener speaks to the backends: HTTP/1.1, or HTTP/2 (h2c, or h2
    # by ALPN with tls), which gRPC needs (trailers). See proxy/http2/upstream.py.
    protocol: Literal["http1", "h2"] = "http1"
    max_connections_per_backend: int | None = Field(None, ge=1, le=1_000_000)  # 503 when all are full
    # Requests in flight to all the pool's backends together (Envoy's cluster-wide
    # max_requests circuit breaker; http listeners). Beyond it: the queue, else 503.
    max_requests: int | None = Field(None, ge=1, le=1_000_000)
    # Wait for a free backend slot instead of 503 at once (http listeners).
    queue: QueueConfig | None = None
    # Speak TLS to the backends (an http listener re-encrypts what it decrypted).
    tls: UpstreamTLS | None = None
    # tcp listeners: start every backend connection with a PROXY protocol header
    # (v1 text, v2 binary) naming the real client, which L4 otherwise hides.
    proxy_protocol: ProxyProtocol | None = None

    def backend_tls(self, backend: BackendConfig) -> UpstreamTLS | None:
        return backend.tls if backend.tls is not None else self.tls

    def backend_proxy_protocol(self, backend: BackendConfig) -> str | None:
        value = backend.proxy_protocol or self.proxy_protocol
        return None if value == "off" else value

    def backend_limit(self, backend: BackendConfig) -> int | None:
        return (backend.max_connections if backend.max_connections is not None
                else self.max_connections_per_backend)

    def uses_tls(self) -> bool:
        return self.tls is not None or any(b.tls is not None for b in self.backends)

    def uses_proxy_protocol(self) -> bool:
        return self.proxy_protocol is not None or any(
            b.proxy_protocol in ("v1", "v2") for b in self.backends)

    @model_validator(mode="after")
    def _unique_backends(self):
        seen: set[str] = set()
        dupes = sorted({b.name for b in self.backends if b.name in seen or seen.add(b.name)})
        if dupes:
            raise ValueError(f"backend names must be unique in a pool: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _backups_need_primaries(self):
        if self.backends and all(b.backup for b in self.backends):
            raise ValueError("every backend is a backup, so none would ever serve first: "
                             "make at least one a primary (backup: false)")
        return self

    @model_validator(mode="after")
    def _queue_needs_a_limit(self):
        if (self.queue is not None and self.max_connections_per_backend is None
                and self.max_requests is None
                and self.backends and all(b.max_connections is None for b in self.backends)):
            raise ValueError("queue: requests wait for a backend at its connection limit, and "
                             "no backend has one: set max_connections_per_backend (or "
                             "max_connections on backends, or the pool's max_requests), "
                             "or remove queue")
        return self

    @model_validator(mode="after")
    def _tables_bounded(self):
        serving = sum(1 for b in self.backends if b.weight > 0)
        algorithm = self.balancer.algorithm
        if algorithm == "maglev" and serving > self.balancer.table_size:
            raise ValueError(
                f"balancer.table_size {self.balancer.table_size} is smaller than the {serving} "
                "backends that take traffic; maglev needs a slot for each (about 100 per "
                "backend spreads evenly): raise table_size (a prime, at most "
                f"{MAX_TABLE_SIZE})")
        if algorithm in ("consistent_hash", "consistent_hash_bounded") \
                and serving * self.balancer.virtual_nodes > MAX_RING_POINTS:
            most = max(1, MAX_RING_POINTS // serving)
            raise ValueError(
                f"the ring would have {serving} x {self.balancer.virtual_nodes} = "
                f"{serving * self.balancer.virtual_nodes} points, above {MAX_RING_POINTS} "
                f"(rebuilt on every change, on the proxy's loop): set balancer.virtual_nodes "
                f"to at most {most} for {serving} backends")
        return self

    def needs_http(self) -> list[str]:
        """Reasons this pool can only sit behind an HTTP listener."""
        return [reason for reason, _fix in self.http_needs()]

    def http_needs(self) -> list[tuple[str, str, str]]:
        """(setting, reason, what to change) for each HTTP-only feature of this pool."""
        out = []
        if self.balancer.needs_http():
            out.append(("balancer.hash_key.source",
                        f"balancer {self.balancer.algorithm} hashes on "
                        f"{self.balancer.hash_key.source}, which only exists in HTTP",
                        "hash on hash_key.source: client_ip, or use a balancer that needs "
                        "no HTTP"))
        if self.sticky and self.sticky.needs_http():
            out.append(("sticky.mode", f"sticky mode {self.sticky.mode} needs HTTP cookies",
                        "use sticky mode source_ip"))
        return out


# ---------------------------------------------------------------- root

class Config(Strict):
    admin: AdminConfig = AdminConfig()
    listeners: Annotated[dict[Name, ListenerConfig], Field(max_length=MAX_LISTENERS)]
    routes: Annotated[dict[Name, RouteConfig], Field(max_length=MAX_ROUTES)] = {}
    pools: Annotated[dict[Name, PoolConfig], Field(max_length=MAX_POOLS)] = {}
    # "-" for stdout, a file path, or null for none.
    access_log: Annotated[str, _no_controls("access_log"),
                          Field(min_length=1, max_length=4096)] | None = None
    # On SIGTERM: stop accepting, let requests in flight finish for up to this
    # long, then close what is left (`--grace` on the command line overrides).
    shutdown_grace: Duration = 5.0

    @field_validator("shutdown_grace")
    @classmethod
    def _grace_bound(cls, value):
        if value > 3600:
            raise ValueError(f"shutdown_grace is at most 1h, got {format_duration(value)}")
        return value


MAX_ERRORS = 100
MAX_MESSAGE = 600


def _bounded(errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """At most MAX_ERRORS errors of at most MAX_MESSAGE characters: a hostile
    config (10,000 bad backends, a huge key) cannot make a huge answer."""
    out = [(p if len(p) <= 200 else p[:200] + "...",
            m if len(m) <= MAX_MESSAGE else m[:MAX_MESSAGE] + "...") for p, m in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        out.append(("", f"... and {len(errors) - MAX_ERRORS} more errors (fix these first)"))
    return out


class ConfigError(Exception):
    """Every problem found, each as (path, message)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = _bounded(list(errors))
        errors = self.errors
        super().__init__("; ".join(f"{p}: {m}" for p, m in errors))

    def lines(self) -> list[str]:
        return [f"{path}: {message}" if path else message for path, message in self.errors]

    def as_json(self) -> dict:
        return {"error": "config refused",
                "errors": [{"path": p, "message": m} for p, m in self.errors]}


def _format_loc(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            text = str(part)
            out += ("." if out else "") + (text if len(text) <= 40 else text[:40] + "...")
    return out


def _pydantic_errors(exc: ValidationError) -> list[tuple[str, str]]:
    errors = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see proxy/examples/)"
        errors.append((_format_loc(err["loc"]), message))
    return errors


L4_BLIND = ("at L4 the proxy relays bytes without parsing HTTP, so it never sees a "
            "host, path, header or cookie")


def cross_check(config: Config, known_routes: set | None = None,
                known_pools: set | None = None) -> list[tuple[str, str]]:
    """Problems that span objects: dangling names and impossible pairings.

    `known_routes` / `known_pools`: every name the config defines, valid or
    not, when `config` holds only the objects that validated (see
    `parse_config`): a reference to an invalid object is not also "dangling".
    """
    known_routes = set(config.routes) if known_routes is None else known_routes
    known_pools = set(config.pools) if known_pools is None else known_pools
    errors: list[tuple[str, str]] = []
    binds: dict[tuple[str, int], str] = {}
    behind_http: dict[str, str] = {}  # pool -> a listener that reaches it through routes
    behind_tcp: dict[str, str] = {}  # pool -> a tcp listener that relays to it
    for lname, listener in config.listeners.items():
        path = f"listeners.{lname}"
        if listener.bind in binds and listener.bind[1] != 0:
            errors.append((f"{path}.bind", f"already used by listener {binds[listener.bind]}"))
        binds[listener.bind] = lname
        tls = listener.tls
        if listener.protocol == "http":
            if listener.pool is not None:
                errors.append((f"{path}.pool", "http listeners pick pools through routes; "
                               "write a route with forward: POOL"))
            if not listener.routes:
                errors.append((f"{path}.routes", "an http listener needs at least one route"))
            for i, rname in enumerate(listener.routes):
                if rname not in known_routes:
                    errors.append((f"{path}.routes[{i}]", f"no route named {rname!r}"))
                elif rname in config.routes:
                    for pname in config.routes[rname].pools():
                        behind_http.setdefault(pname, lname)
            if tls is not None and tls.mode == "passthrough":
                errors.append((f"{path}.tls.mode", "passthrough relays TLS without decrypting "
                               "it, so there is no HTTP to route on: use protocol: tcp with "
                               "tls.sni, or mode: terminate"))
            continue
        if listener.protocol == "udp":
            continue  # checked by _check_http2_udp
        # tcp (L4)
        if listener.routes:
            errors.append((f"{path}.routes", f"a tcp listener cannot route on HTTP: {L4_BLIND}; "
                           "use protocol: http, or give pool: NAME"))
        if tls is not None and tls.mode == "terminate":
            errors.append((f"{path}.tls.mode", "a tcp listener does not terminate TLS: use "
                           "protocol: http to terminate (and route on HTTP), or mode: "
                           "passthrough to route on the server name and relay"))
        pools = []
        if listener.pool is not None:
            pools.append((f"{path}.pool", listener.pool))
        elif not (tls is not None and tls.mode == "passthrough" and tls.unknown_sni == "refuse"):
            if tls is not None and tls.mode == "passthrough":
                errors.append((f"{path}.pool", "with tls passthrough, pool: NAME gets the names "
                               "not in tls.sni (and clients that send none); give one, or set "
                               "tls.unknown_sni: refuse"))
            else:
                errors.append((f"{path}.pool", "a tcp listener needs pool: NAME"))
        if tls is not None and tls.mode == "passthrough":
            pools += [(f"{path}.tls.sni.{name}", pname) for name, pname in tls.sni.items()]
        for where, pname in pools:
            if pname not in config.pools:
                if pname not in known_pools:
                    errors.append((where, f"no pool named {pname!r}"))
                continue
            behind_tcp.setdefault(pname, lname)
            for setting, reason, fix in config.pools[pname].http_needs():
                errors.append((f"pools.{pname}.{setting}",
                               f"{reason}, and pool {pname} is behind tcp listener {lname}, "
                               f"which cannot see it ({L4_BLIND}): {fix}"))
    errors += _check_http2_udp(config)
    errors += _check_probe_rate(config)
    for rname, route in config.routes.items():
        for pname in route.pools():
            if pname not in known_pools:
                errors.append((f"routes.{rname}", f"no pool named {pname!r}"))
    seen_backends: dict[str, str] = {}
    for pname, pool in config.pools.items():
        for i, backend in enumerate(pool.backends):
            key = backend.name
            if key in seen_backends and seen_backends[key] != pname:
                errors.append((f"pools.{pname}.backends[{i}].name",
                               f"{key!r} is already a backend of pool {seen_backends[key]}; "
                               "backend names are unique across pools"))
            seen_backends.setdefault(key, pname)
        if pname in behind_http and pool.uses_proxy_protocol():
            errors.append((f"pools.{pname}.proxy_protocol",
                           f"pool {pname} is behind http listener {behind_http[pname]}, which "
                           "reuses backend connections for many clients, so one PROXY header "
                           "per connection would name the wrong client; HTTP already passes "
                           "it in X-Forwarded-For / Forwarded. Use it behind a tcp listener"))
        if pname in behind_tcp and pool.max_requests is not None:
            errors.append((f"pools.{pname}.max_requests",
                           f"pool {pname} is behind tcp listener {behind_tcp[pname]}, which "
                           "sees connections, not requests: limit them with "
                           "max_connections_per_backend (or backends[].max_connections)"))
        if pname in behind_tcp and pool.queue is not None:
            errors.append((f"pools.{pname}.queue",
                           f"pool {pname} is behind tcp listener {behind_tcp[pname]}; the "
                           "queue holds HTTP requests (a TCP connection over the limit is "
                           "refused at once): remove queue, or serve the pool over http"))
        if pname in behind_tcp and pool.uses_tls():
            errors.append((f"pools.{pname}.tls",
                           f"pool {pname} is behind tcp listener {behind_tcp[pname]}, which "
                           "relays the client's bytes as they are and never opens TLS to a "
                           f"backend itself: remove pools.{pname}.tls (with tls mode "
                           "passthrough the client's own TLS session reaches the backend), "
                           "or put the pool behind an http listener to re-encrypt"))
        if pool.health is not None and pool.health.tls:
            plain = [b.name for b in pool.backends if pool.backend_tls(b) is None]
            if plain:
                errors.append((f"pools.{pname}.health.tls",
                               "health.tls: true speaks TLS with the pool's backend TLS "
                               f"settings, and {', '.join(plain)} has none: add "
                               f"pools.{pname}.tls, or remove health.tls"))
    return errors


_SECTIONS = (("listeners", ListenerConfig), ("routes", RouteConfig), ("pools", PoolConfig))


# Stand-ins for required settings that did not validate, so the rest of the
# object can still be cross-checked (port 0 is never "already used").
_PLACEHOLDERS = {ListenerConfig: {"bind": "127.0.0.1:0"}}


def _salvage(model, item):
    """`item` validated as `model`; when it does not, the same without the keys that
    failed (required ones replaced by a stand-in), or None when that fails too."""
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        if not isinstance(item, dict):
            return None
        bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
        if not bad or len(bad) < len({str(e["loc"][:1]) for e in exc.errors()}):
            return None  # an error of the object as a whole: nothing to keep
        kept = {k: v for k, v in item.items() if k not in bad}
        for key, value in _PLACEHOLDERS.get(model, {}).items():
            if key in bad:
                kept[key] = value
    try:
        return model.model_validate(kept)
    except ValidationError:
        return None


def _valid_parts(data: dict) -> tuple[Config, set, set]:
    """The objects of `data` that validate on their own, as a Config to cross-check,
    and every route and pool name `data` defines (valid or not)."""
    parts: dict[str, dict] = {}
    for key, model in _SECTIONS:
        raw = data.get(key)
        parts[key] = {}
        if not isinstance(raw, dict):
            continue
        for name, item in raw.items():
            salvaged = _salvage(model, item)
            if salvaged is not None:
                parts[key][name] = salvaged
    names = {key: {n for n in data.get(key) or {} if isinstance(n, str)}
             if isinstance(data.get(key), dict) else set() for key in ("routes", "pools")}
    return Config.model_construct(**parts), names["routes"], names["pools"]


# Active checks run on the proxy's own loop (~100 us of CPU per probe): a
# config asking for more than this many probes per second would leave no time
# for traffic. 1000/s is 2000 backends at the default 2s interval.
MAX_PROBES_PER_S = 1000


def _check_probe_rate(config: Config) -> list[tuple[str, str]]:
    rates = {pname: len(pool.backends) / pool.health.interval
             for pname, pool in config.pools.items() if pool.health is not None}
    total = sum(rates.values())
    if total <= MAX_PROBES_PER_S:
        return []
    worst = max(rates, key=rates.get)
    return [(f"pools.{worst}.health.interval",
             f"active health checks would send {total:.0f} probes per second across all "
             f"pools (pool {worst}: {rates[worst]:.0f}/s), above {MAX_PROBES_PER_S}/s, which "
             "would leave the proxy no time for traffic: raise health.interval or check "
             "fewer backends")]


def _check_http2_udp(config: Config) -> list[tuple[str, str]]:
    """HTTP/2 and UDP pairings (issue 14)."""
    errors: list[tuple[str, str]] = []
    behind_udp: dict[str, str] = {}
    for lname, listener in config.listeners.items():
        path = f"listeners.{lname}"
        tls = listener.tls
        if listener.http2 is not None and listener.protocol != "http":
            errors.append((f"{path}.http2", f"http2 is served by http listeners; a "
                           f"{listener.protocol} listener relays {listener.protocol.upper()} "
                           "without reading it: remove http2"))
        if (listener.protocol == "http" and tls is not None and tls.mode == "terminate"
                and "h2" in tls.alpn and listener.http2 is None):
            errors.append((f"{path}.tls.alpn", "h2 in tls.alpn offers HTTP/2, which this "
                           "listener serves only with http2: true; add it, or remove h2"))
        if listener.protocol == "udp" and listener.proxy_protocol is not None:
            errors.append((f"{path}.proxy_protocol", "a PROXY header starts a stream "
                           "connection; a udp listener has none: remove proxy_protocol"))
        if listener.protocol != "http" and listener.forwarded != ForwardedTrust():
            errors.append((f"{path}.forwarded", "X-Forwarded-For and Forwarded are HTTP "
                           f"headers, which a {listener.protocol} listener never reads: "
                           "remove forwarded (proxy_protocol carries the client address "
                           "at L4)"))
        if listener.udp is not None and listener.protocol != "udp":
            errors.append((f"{path}.udp", "udp settings are for protocol: udp listeners"))
        if listener.protocol != "udp":
            continue
        if listener.routes:
            errors.append((f"{path}.routes", "a udp listener balances datagrams per flow "
                           "and cannot route on HTTP: give pool: NAME"))
        if tls is not None:
            errors.append((f"{path}.tls", "a udp listener does not speak TLS (DTLS is not "
                           "supported): remove tls"))
        if listener.pool is None:
            errors.append((f"{path}.pool", "a udp listener needs pool: NAME"))
        elif listener.pool not in config.pools:
            errors.append((f"{path}.pool", f"no pool named {listener.pool!r}"))
        else:
            behind_udp.setdefault(listener.pool, lname)
    for pname, lname in behind_udp.items():
        pool = config.pools[pname]
        for setting, reason, fix in pool.http_needs():
            errors.append((f"pools.{pname}.{setting}", f"{reason}, and pool {pname} is behind "
                           f"udp listener {lname}, which sees datagrams only: {fix}"))
        if pool.uses_tls():
            errors.append((f"pools.{pname}.tls", f"pool {pname} is behind udp listener "
                           f"{lname}: datagrams are relayed as they are; remove tls"))
        if pool.protocol != "http1":
            errors.append((f"pools.{pname}.protocol", f"pool {pname} is behind udp listener "
                           f"{lname}, which relays datagrams: remove protocol: h2"))
        if pool.health is not None and pool.health.type == "grpc":
            errors.append((f"pools.{pname}.health.type", "a udp pool cannot answer gRPC on "
                           "its traffic port: use type: udp, or tcp/http with health.port"))
    for pname, pool in config.pools.items():
        health = pool.health
        if health is None:
            continue
        if health.type == "udp" and pname not in behind_udp:
            errors.append((f"pools.{pname}.health.type", f"type: udp sends a datagram, and "
                           f"pool {pname} is not behind a udp listener: use http, tcp or grpc"))
        if health.type == "grpc" and pool.protocol != "h2" and health.port is None:
            errors.append((f"pools.{pname}.health.type", "type: grpc speaks HTTP/2 to the "
                           f"backends: set pools.{pname}.protocol: h2 (gRPC backends need "
                           "it anyway)"))
    return errors


def parse_config(data: object) -> Config:
    """Validate a mapping (already parsed YAML/JSON) into a Config or raise ConfigError.

    Every error is reported at once: when some objects do not validate, the
    ones that do are still cross-checked (dangling names, impossible pairings),
    so fixing the first error never reveals a second one.
    """
    if not isinstance(data, dict):
        raise ConfigError([("", "the config must be a mapping with listeners, routes, "
                                f"pools; got {excerpt(data)}")])
    try:
        check_shape(data)
    except TextError as exc:
        raise ConfigError([(exc.path, exc.detail)]) from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = _pydantic_errors(exc)
        partial, routes, pools = _valid_parts(data)
        reported = [p for p, _ in errors]
        # A cross-object error about a setting already refused above would only
        # repeat it (a listener whose routes did not validate "has no routes").
        errors += [e for e in cross_check(partial, routes, pools)
                   if not any(e[0].startswith(p) for p in reported if p)]
        raise ConfigError(errors) from None
    errors = cross_check(config)
    if errors:
        raise ConfigError(errors)
    return config


def load_data(text: str | bytes, as_json: bool = False, what: str = "the config") -> object:
    """Config text (or its bytes) -> plain data, refused with ConfigError when it is not
    bounded UTF-8 YAML/JSON (see proxy/configtext.py)."""
    try:
        if isinstance(text, (bytes, bytearray)):
            return parse_bytes(bytes(text), as_json=as_json, what=what)
        if len(text) > MAX_BYTES:
            raise TextError(f"{what} is {len(text)} characters; the limit is {MAX_BYTES}")
        return parse_text(text, as_json=as_json)
    except TextError as exc:
        raise ConfigError([("", str(exc))]) from None


def load_config(text: str | bytes, as_json: bool = False) -> Config:
    return parse_config(load_data(text, as_json=as_json))


def read_config_file(path: str) -> bytes:
    """The file's bytes (at most MAX_BYTES + 1 are read), or ConfigError."""
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([("", f"cannot read {excerpt(path, 200)}: {reason}")]) from None


def load_config_file(path: str) -> Config:
    return parse_config(load_data(read_config_file(path), what=f"config file {path}"))


def to_data(config: Config) -> dict:
    """Back to plain data that `parse_config` accepts again (durations as "500ms")."""
    return config.model_dump(mode="json")
