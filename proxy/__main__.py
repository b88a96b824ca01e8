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
refused config exits 2.

Signals. SIGHUP reads the config file again and applies it exactly as PUT
/config would (the same validation, the same swap; listeners are re-bound,
state of unchanged backends kept). A file that is refused changes nothing:
every error is printed to stderr with its path, a `warning` event says so, and
the proxy keeps running on the config it had. SIGTERM and SIGINT drain: stop
accepting, let requests in flight finish for up to `shutdown_grace` (config;
`--grace` overrides), close what is left, exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from proxy.config import ConfigError, load_config_file, load_data, parse_config, read_config_file

EXIT_OK = 0
EXIT_LISTEN = 1
EXIT_CONFIG = 2


EXIT_BUG = 3

log = logging.getLogger("proxy")


def check(path: str) -> int:
    try:
        return _check(path)
    except Exception as exc:  # a bug, not the file's fault: say so, without a traceback
        print(f"lblab proxy: internal error while checking {path}: {type(exc).__name__}: "
              f"{str(exc)[:300]} (this is a bug in the proxy, not in your file)")
        return EXIT_BUG


def _check(path: str) -> int:
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


class Reloader:
    """SIGHUP: read the config file again and apply it like PUT /config.

    One reload at a time; a SIGHUP that arrives during one runs another right
    after it (the file may have changed again). Reading and validating run in a
    worker thread, the swap on the loop, as for PUT /config.
    """

    def __init__(self, server, path: str):
        self.server = server
        self.path = path
        self.running = False
        self.again = False

    def signal(self) -> None:
        if self.server.stopping:
            return
        if self.running:
            self.again = True
            return
        self.running = True
        self.server.spawn(self._loop())

    async def _loop(self) -> None:
        try:
            while True:
                self.again = False
                await self.reload()
                if not self.again or self.server.stopping:
                    break
        finally:
            self.running = False

    async def reload(self) -> bool:
        from proxy.events import Warning as WarningEvent

        runtime = self.server.runtime
        try:
            raw = await asyncio.to_thread(read_config_file, self.path)
            data = await asyncio.to_thread(load_data, raw, False, f"config file {self.path}")
            config = await asyncio.to_thread(parse_config, data)
            old_listen = runtime.config.admin.listen
            runtime.apply(config, verb="reload", target=self.path)
        except ConfigError as exc:
            print(f"lblab proxy: reload of {self.path} refused, still running the previous "
                  "config:", file=sys.stderr)
            for line in exc.lines():
                print(f"  {line}", file=sys.stderr)
            sys.stderr.flush()
            self.server.bus.publish(WarningEvent(
                source="reload", message=f"SIGHUP: {self.path} refused ({len(exc.errors)} "
                                         f"error(s)): " + "; ".join(exc.lines()[:5])))
            return False
        except Exception:  # a bug: the proxy must keep serving on the config it has
            log.exception("reload of %s failed", self.path)
            return False
        print(f"lblab proxy: reloaded {self.path} (generation {runtime.generation})",
              file=sys.stderr, flush=True)
        if config.admin.listen != old_listen:
            print("lblab proxy: admin.listen changed; the admin API keeps its address until "
                  "the proxy restarts", file=sys.stderr, flush=True)
        return True


async def serve(config, grace: float | None, path: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; `grace` None: the config's shutdown_grace at that time."""
    from proxy.server import ListenError, ProxyServer

    server = ProxyServer(config)
    try:
        await server.start()
    except ListenError as exc:
        print(f"lblab proxy: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return EXIT_LISTEN
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handlers = [(signal.SIGTERM, stop.set), (signal.SIGINT, stop.set)]
    if path is not None:
        handlers.append((signal.SIGHUP, Reloader(server, path).signal))
    for sig, handler in handlers:
        try:
            loop.add_signal_handler(sig, handler)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            pass
    # Everything made while starting (modules, config, runtime) lives as long as
    # the process: out of the cyclic GC's sight, so its full collections walk
    # only what requests made (about half the time, and half the pause).
    gc.freeze()
    print(server.listening_line(), flush=True)
    try:
        await stop.wait()
    finally:
        if path is not None:
            # A SIGHUP while draining must not kill the process either.
            try:
                loop.add_signal_handler(signal.SIGHUP, lambda: None)
            except (NotImplementedError, RuntimeError):
                pass
        wait = server.runtime.config.shutdown_grace if grace is None else grace
        print(f"lblab proxy: stopping, requests in flight get up to {wait:g}s", flush=True)
        await server.stop(grace=wait)
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
    parser.add_argument("--grace", type=float, default=None,
                        help="seconds to let requests finish on SIGTERM (default: the "
                             "config's shutdown_grace, 5s unless set)")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.grace is not None and not 0 <= args.grace <= 3600:
        parser.error(f"--grace must be from 0 to 3600 seconds, got {args.grace:g}")
    if args.check:
        return check(args.check)
    if hasattr(signal, "SIGHUP"):
        # Until the loop's handler is installed, a SIGHUP (a reload sent too
        # early) is ignored rather than fatal.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
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
        return asyncio.run(serve(config, args.grace, args.config))
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
