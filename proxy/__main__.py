"""`python -m proxy --config FILE.yaml` runs the proxy; `--check FILE.yaml` validates.

`pki init|show|path` manages the lab PKI (proxy/pki.py): the lab CA and the
certificates the TLS examples refer to as `pki:<file>`.

--check prints every problem of the config, one per line with its path
(`pools.web.balancer.algorithm: unknown algorithm ...`), and exits 2; or
prints "ok" and exits 0.

--config starts the proxy (on uvloop when it is installed) and prints one
line once every listener and the admin API listen, for launchers to wait on:

    lblab proxy listening: web http 127.0.0.1:8080; admin 127.0.0.1:9900

An address that cannot be bound is reported with what to change, exit 1; a
refused config exits 2. SIGTERM and SIGINT stop it cleanly: it stops
accepting, lets requests in flight finish (up to --grace seconds), exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from proxy.config import ConfigError, load_config_file

EXIT_OK = 0
EXIT_LISTEN = 1
EXIT_CONFIG = 2


def check(path: str) -> int:
    try:
        config = load_config_file(path)
    except ConfigError as exc:
        for line in exc.lines():
            print(line)
        return EXIT_CONFIG
    # Certificates and keys are read at start, not during validation; --check
    # reads them too so a missing file is found before the proxy is started.
    from proxy.tls import check_files

    problems = check_files(config)
    if problems:
        for line in ConfigError(problems).lines():
            print(line)
        return EXIT_CONFIG
    print("ok")
    return EXIT_OK


async def serve(config, grace: float) -> int:
    from proxy.server import ListenError, ProxyServer

    server = ProxyServer(config)
    try:
        await server.start()
    except ListenError as exc:
        print(f"lblab proxy: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return EXIT_LISTEN
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            pass
    print(server.listening_line(), flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop(grace=grace)
    print("lblab proxy stopped", flush=True)
    return EXIT_OK


def install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pki"]:
        # `python -m proxy pki init|show|path`: the lab PKI (proxy/pki.py).
        from proxy import pki

        return pki.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m proxy",
                                     description="LBLab's HTTP/TCP load balancer.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--config", metavar="FILE", help="run with this YAML config")
    mode.add_argument("--check", metavar="FILE",
                      help="validate a config: print every error with its path, exit 2 if any")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds to let requests finish on SIGTERM (default 5)")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.check:
        return check(args.check)
    try:
        config = load_config_file(args.config)
    except ConfigError as exc:
        print(f"lblab proxy: config {args.config} refused:", file=sys.stderr)
        for line in exc.lines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    if not args.no_uvloop:
        install_uvloop()
    try:
        return asyncio.run(serve(config, args.grace))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
