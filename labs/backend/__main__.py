"""python -m labs.backend: run one toy backend.

    python -m labs.backend --name b1 --port 9001 [--host 127.0.0.1]
                           [--redis-url redis://127.0.0.1:6379/0] [--seed 42]
                           [--mode http|tcp|grpc|udp] [--control-port PORT] [--proxy-protocol]
                           [--tls --cert FILE --key FILE [--client-ca FILE]]
                           [--latency-ms 200 --error-rate 0.1 --warmup 5 ...]

Endpoints (every response has the header ``X-Backend: <name>``):

  GET  /                    echo JSON: backend, method, path, query, http_version, client
  (any other path/method)   (peer ip:port), host, x_forwarded_for, x_forwarded_proto,
                            x_forwarded_host, forwarded, request_id (X-Request-Id),
                            connection_id, connection_request, body_bytes, headers
  GET  /work?ms=200[&cpu_ms=50]  sleep ms (and burn cpu_ms); {"work_ms", "cpu_ms", "took_ms"}
  POST /upload              streaming sink: {"bytes", "chunks", "duration_ms", "chunked"};
                            a client leaving mid-body counts as an aborted upload
  GET  /health/live         liveness: 200 while the process runs (even warming up)
  GET  /health/ready        readiness (alias /health): 503 when warming up, health_fail,
                            dependency_down, or Redis (if configured) does not answer
  POST /login?user=alice    new session (memory, or Redis with --redis-url), cookie SESSIONID
  GET  /profile (or /me)    200 {"user", "created_by"} with a known session, else 401
  POST /logout              forget the session
  GET  /_control            this backend's view: requests, in-flight, sessions, faults...
  GET|PUT|POST|DELETE /_control/faults   read / partially update / clear the faults
  DELETE /_control/stats    reset counters
  POST /_control/crash      (alias /_control/kill) exit the process now, ?code=N

The /_control endpoints are never subject to faults. Every fault knob below can also be
given at start; ``--warmup S`` starts a warm-up of S seconds at process start.

TLS (--tls --cert FILE --key FILE [--client-ca FILE]): the same app over TLS (TLS 1.2+,
ALPN http/1.1), control API included; the echo gains "tls": {version, cipher, sni, alpn,
client_cert}. --client-ca requires a client certificate signed by that CA.

PROXY protocol (--proxy-protocol): every connection must start with a v1 or v2 header
(auto-detected; before the TLS handshake with --tls); a connection without a valid one is
closed and a line is logged. The echo's "client" is then the address from the header, and
"peer" (the real socket peer: the proxy) and "proxy_protocol" {version, command, protocol,
source, destination[, tlvs]} are added. LOCAL / UNKNOWN headers keep the real peer.

TCP mode (--mode tcp): the main port speaks a line protocol instead of HTTP (works with
--tls and --proxy-protocol):
  on connect                HELLO from <name>
  JOIN <player>             WELCOME <player> on <name>, players here: N
  WHO                       PLAYERS N on <name>: alice, bob
  PING / ECHO <text>        PONG <name> / <text>
  WHOAMI                    one JSON line: backend, player, client, peer, tls, proxy_protocol
  QUIT                      BYE from <name>, then close; any disconnect removes the player
The HTTP control API and /health, /health/ready, /health/live are then served on
--control-port (plain HTTP; default: a free port, printed); GET /_control lists the
players. Faults apply per line written (latency, reset, hang, errors as "ERR ...").
A TCP health check is a connect to the main port.

gRPC mode (--mode grpc, see grpc_mode.py): cleartext HTTP/2 serving grpc.health.v1.Health/Check
and lblab.toy.Echo (unary Whoami: the reply's field 1 is the backend name; server-streaming
Stream); UDP mode (--mode udp, see udp_mode.py): each datagram is answered with
"<name> <payload>". Both keep the control API on --control-port (default: a free port).

--control-port also works in HTTP mode: a plain HTTP port with only /_control... and
/health... (useful when the main port wants TLS client certificates or a PROXY header).

Several at once, sharing memory (how labs.sandbox starts them; see preload.py):

    python -m labs.backend --preload [--die-with-parent] --backend LOG "ARGS" [--backend ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import sys
import time

from .faults import (CHOICE, COUNT, FLAG, FLAG_OR_RATE, KNOBS, STATUS, FaultState, check_value,
                     validate_patch)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _rate_or_flag(text: str) -> bool | int | float:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    return _number(text)


def _flag_name(knob_name: str) -> str:
    return "--" + knob_name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m labs.backend", description="Run one LBLab toy backend.",
        epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--name", required=True, help="backend name, sent as X-Backend (e.g. b1)")
    p.add_argument("--port", required=True, type=int, help="TCP port (0 = any free port, printed)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--redis-url", help="keep sessions in Redis (e.g. redis://127.0.0.1:6379/0); "
                                       "default: in this process's memory")
    p.add_argument("--redis-prefix", default="lblab:session:", help="Redis key prefix for sessions")
    p.add_argument("--session-ttl", type=float, default=3600, help="session lifetime in seconds")
    p.add_argument("--seed", type=int, help="seed the fault random source (reproducible error rates)")
    p.add_argument("--keepalive-timeout", type=float, default=60.0,
                   help="close idle keep-alive connections after this many seconds (0 = never)")
    p.add_argument("--no-uvloop", action="store_true", help="use the stock asyncio event loop")
    m = p.add_argument_group("TLS, PROXY protocol, TCP mode")
    m.add_argument("--mode", choices=("http", "tcp", "grpc", "udp"), default="http",
                   help="http (default): the HTTP app; tcp: the line-based game server "
                        "(JOIN/WHO/PING/ECHO/QUIT); grpc: health + lblab.toy.Echo over h2c; "
                        "udp: '<name> <payload>' replies; control API on --control-port")
    m.add_argument("--tls", action="store_true",
                   help="serve the main port over TLS (TLS 1.2+, ALPN http/1.1 in http mode)")
    m.add_argument("--cert", metavar="FILE", help="PEM certificate chain for --tls "
                                                  "(may also hold the key)")
    m.add_argument("--key", metavar="FILE", help="PEM private key for --tls")
    m.add_argument("--client-ca", metavar="FILE",
                   help="with --tls: require a client certificate signed by this CA (PEM); "
                        "its subject is reported in the echo")
    m.add_argument("--proxy-protocol", action="store_true",
                   help="require a PROXY protocol v1 or v2 header (auto-detected) at the start "
                        "of every connection; connections without one are closed and logged")
    m.add_argument("--control-port", type=int, metavar="PORT",
                   help="also serve /_control... and /health... as plain HTTP on this port "
                        "(0 = any free port); in tcp mode the default is 0")
    p.add_argument("--faults", metavar="JSON", help='initial faults as a JSON object, e.g. \'{"latency_ms": 50}\'')
    g = p.add_argument_group("faults at start (same names as PUT /_control/faults)")
    for knob in KNOBS:
        flags = [_flag_name(knob.name)]
        if knob.name == "warmup_s":
            flags.insert(0, "--warmup")
        if knob.kind == FLAG:
            g.add_argument(*flags, dest=knob.name, action="store_const", const=True, default=None,
                           help=knob.help)
        elif knob.kind == FLAG_OR_RATE:
            g.add_argument(*flags, dest=knob.name, nargs="?", const=True, default=None,
                           type=_rate_or_flag, metavar="RATE", help=knob.help)
        elif knob.kind == CHOICE:
            g.add_argument(*flags, dest=knob.name, default=None, choices=knob.choices,
                           help=knob.help)
        else:
            g.add_argument(*flags, dest=knob.name, default=None,
                           type=int if knob.kind in (STATUS, COUNT) else _number, help=knob.help)
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict]:
    """Parse and validate the command line; return the args and the initial fault patch."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not NAME_RE.fullmatch(args.name):
        parser.error(f"--name must be 1-64 letters, digits, '.', '_' or '-' starting with a "
                     f"letter or digit, got {args.name!r}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    if args.session_ttl <= 0:
        parser.error(f"--session-ttl must be > 0 seconds, got {args.session_ttl}")
    _check_listen_flags(parser, args)
    patch: dict = {}
    if args.faults:
        try:
            patch.update(validate_patch(json.loads(args.faults)))
        except ValueError as exc:  # FaultError is a ValueError, so is bad JSON
            parser.error(f"--faults: {exc}")
    for knob in KNOBS:
        value = getattr(args, knob.name)
        if value is None:
            continue
        problem = check_value(knob.name, value)
        if problem:
            parser.error(f"{_flag_name(knob.name)}: {problem}")
        patch[knob.name] = value
    return args, patch


def _check_listen_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validate --tls/--cert/--key/--client-ca/--control-port; build the TLS context."""
    args.ssl_context = None
    if args.mode in ("grpc", "udp"):
        for flag in ("tls", "proxy_protocol"):
            if getattr(args, flag):
                parser.error(f"--{flag.replace('_', '-')} is not available with --mode "
                             f"{args.mode} (it serves {'cleartext HTTP/2' if args.mode == 'grpc' else 'plain UDP'})")
    if args.tls:
        if not args.cert:
            parser.error("--tls needs --cert FILE (PEM certificate chain) and --key FILE "
                         "(PEM private key, unless the --cert file holds it)")
        from .tls import TLSConfigError, server_context
        try:
            args.ssl_context = server_context(
                args.cert, args.key, args.client_ca,
                alpn=("http/1.1",) if args.mode == "http" else ())
        except TLSConfigError as exc:
            parser.error(str(exc))
    else:
        for flag in ("cert", "key", "client_ca"):
            if getattr(args, flag):
                parser.error(f"--{flag.replace('_', '-')} only makes sense with --tls")
    if args.control_port is None and args.mode in ("tcp", "grpc", "udp"):
        args.control_port = 0   # these modes always have their HTTP control plane
    if args.control_port is not None:
        if not 0 <= args.control_port <= 65535:
            parser.error(f"--control-port must be between 0 and 65535, got {args.control_port}")
        if args.control_port and args.control_port == args.port:
            parser.error(f"--control-port must differ from --port ({args.port})")


async def _listen_main(args: argparse.Namespace, app):
    """The main port: HTTP (serve) or the game (tcp mode), with TLS / PROXY if asked."""
    from .server import serve

    if args.mode == "http":
        return await serve(app, args.host, args.port,
                           keepalive_timeout=args.keepalive_timeout or None,
                           ssl=args.ssl_context, proxy_protocol=args.proxy_protocol,
                           on_refused=app.proxy_protocol_refused)
    if args.mode == "grpc":
        from .grpc_mode import GrpcServer

        grpc_server = GrpcServer(app)
        app.extra_snapshot = grpc_server.snapshot
        return await asyncio.get_running_loop().create_server(
            grpc_server.protocol, args.host, args.port, backlog=1024, reuse_address=True)
    if args.mode == "udp":
        from .udp_mode import UdpBackend

        udp = UdpBackend(app)
        app.extra_snapshot = udp.snapshot
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: udp, local_addr=(args.host, args.port))
        return _DatagramServer(transport)
    from .game import GameServer

    game = GameServer(app, tls=args.tls)
    app.extra_snapshot = game.snapshot
    if args.proxy_protocol:
        from .listen import listen
        server = await listen(game.protocol, args.host, args.port, ssl=args.ssl_context,
                              on_refused=app.proxy_protocol_refused)
    else:
        server = await asyncio.get_running_loop().create_server(
            game.protocol, args.host, args.port, ssl=args.ssl_context, backlog=1024,
            reuse_address=True)
    game.port = server.sockets[0].getsockname()[1]
    return server


class _DatagramServer:
    """A UDP endpoint with the two things run() asks of a server: sockets, close()."""

    def __init__(self, transport):
        self.transport = transport
        self.sockets = [transport.get_extra_info("socket")]

    def close(self) -> None:
        self.transport.close()


async def run(args: argparse.Namespace, patch: dict) -> None:
    from .app import BackendApp, ControlPortApp
    from .server import Connection
    from .sessions import MemorySessionStore, RedisSessionStore

    clock = time.monotonic
    faults = FaultState(clock)
    faults.apply(patch)  # already validated; a warm-up given here starts now
    rng = random.Random(args.seed)
    if args.redis_url:
        store = RedisSessionStore(args.redis_url, ttl_s=args.session_ttl, prefix=args.redis_prefix)
    else:
        store = MemorySessionStore(ttl_s=args.session_ttl)
    app = BackendApp(args.name, store, faults, rng, host=args.host, port=args.port, clock=clock)
    servers = []
    try:
        servers.append(await _listen_main(args, app))
    except OSError as exc:
        await store.close()
        raise SystemExit(f"labs.backend {args.name}: cannot listen on {args.host}:{args.port}: {exc}")
    app.port = servers[0].sockets[0].getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    if args.mode == "http":
        scheme = "https" if args.tls else "http"
        notes = [f"pid {os.getpid()}", f"sessions: {store.kind}"]
    elif args.mode in ("grpc", "udp"):
        scheme = args.mode  # grpc:// (cleartext HTTP/2) or udp://
        notes = [f"pid {os.getpid()}", args.mode]
    else:
        scheme = "tcp+tls" if args.tls else "tcp"
        notes = [f"pid {os.getpid()}", "game"]
    main_url = f"{scheme}://{host}:{app.port}"
    if args.proxy_protocol:
        notes.append("proxy protocol")
    if args.client_ca:
        notes.append("client certificates required")
    control_port = None
    if args.control_port is not None:
        control = ControlPortApp(app, main_url)
        keepalive = args.keepalive_timeout or None
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: Connection(control, keepalive), args.host, args.control_port,
                reuse_address=True)
        except OSError as exc:
            for server in servers:
                server.close()
            await store.close()
            raise SystemExit(f"labs.backend {args.name}: cannot listen on "
                             f"{args.host}:{args.control_port} (--control-port): {exc}")
        servers.append(server)
        control_port = server.sockets[0].getsockname()[1]
        notes.append(f"control http://{host}:{control_port}")
    app.listen_info = {"mode": args.mode, "tls": args.tls, "proxy_protocol": args.proxy_protocol,
                       "control_port": control_port}
    print(f"labs.backend {args.name} listening on {main_url} ({', '.join(notes)})", flush=True)
    if args.redis_url:
        try:
            await asyncio.wait_for(store.ping(), 2.0)
        except Exception as exc:  # report and keep serving: readiness will say it too
            print(f"labs.backend {args.name}: warning: {exc}", file=sys.stderr, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    await store.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--preload"]:
        from .preload import main as preload_main  # only the preloading parent needs it

        return preload_main(argv[1:], main)
    args, patch = parse_args(argv)
    try:
        if args.no_uvloop:
            raise ImportError
        import uvloop
    except ImportError:
        asyncio.run(run(args, patch))
    else:
        uvloop.run(run(args, patch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
