"""python -m labs.backend --preload: several toy backends forked from one preloaded parent.

    python -m labs.backend --preload [--die-with-parent] --backend LOG ARGS [--backend LOG ARGS ...]

ARGS is one shell-quoted string of ``python -m labs.backend`` arguments
(``"--name b1 --port 9001"``); LOG is the file that backend's stdout and stderr are appended
to. Used by labs.sandbox to start a sandbox's backends; ``python -m labs.backend ARGS`` stays
the way to run one.

Theory of operation
-------------------
Most of a toy backend's memory is the code it imports (asyncio, ssl, uvloop, its own
modules), the same in every backend. This parent imports it once, freezes the garbage
collector's view of it (``gc.freeze()``: collections in the children then never write to
those objects, so their pages stay shared) and forks one child per backend, like
``gunicorn --preload``. The kernel shares the parent's pages with every child copy-on-write:
four backends cost far less than four interpreters that each import everything.

Each child is an ordinary backend process: it starts its own session (so its pid is its
process group, which labs.sandbox signals to stop it), writes to its own log, then runs
exactly what ``python -m labs.backend ARGS`` runs (``labs.backend.__main__.main``, handed
in by it) and exits with its status. Killing one (``POST /_control/crash``, a signal)
affects no other.

The parent prints one line ``{"pids": [...]}`` on stdout (the children's pids, in the order
of ``--backend``), closes stdout, then only reaps its children, logging each exit on stderr,
and exits once none is left. SIGTERM to the parent is passed on to the children it still
has. ``--die-with-parent`` asks the kernel for a SIGTERM to the parent when whoever started
it ends (and so to the backends, passed on), and to each backend when the parent ends, even
by SIGKILL: a launcher killed hard leaves nothing behind.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import signal
import sys
import time
import traceback
from typing import Callable

PR_SET_PDEATHSIG = 1

BackendMain = Callable[[list[str]], int]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m labs.backend --preload",
        description="Start several toy backends forked from one preloaded parent.")
    p.add_argument("--backend", nargs=2, action="append", required=True, metavar=("LOG", "ARGS"),
                   help="a log file and one shell-quoted string of labs.backend arguments")
    p.add_argument("--die-with-parent", action="store_true",
                   help="SIGTERM this process and its backends when its parent ends")
    return p


def preload(argvs: list[list[str]]) -> None:
    """Import now what every backend imports once it runs (``__main__.run``; __main__ itself
    is running already), so the children share it; what only some need (Redis) only when
    one of them asks for it."""
    import encodings.idna  # noqa: F401  (asyncio encodes the host with it when binding)
    import shutil  # noqa: F401  (argparse's help formatter imports it when a parser is built)

    from labs.backend import app, server, sessions  # noqa: F401
    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass
    if any(arg.startswith("--redis-url") for argv in argvs for arg in argv):
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            pass  # the backend that needs it says so in its own log


def _die_with_parent() -> None:
    import ctypes  # only with --die-with-parent

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child(backend_main: BackendMain, argv: list[str], log_path: str, parent: int,
           die_with_parent: bool) -> int:
    """Runs in the forked child (SIGTERM still blocked); returns the backend's exit status."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    os.setsid()
    gc.enable()
    if die_with_parent:
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before prctl: nobody would tell us
            return 1
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} $ python -m labs.backend "
                  f"{shlex.join(argv)} (forked from preloaded pid {parent})\n").encode())
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        code = backend_main(argv)
    except SystemExit as exc:  # what the interpreter would do with it
        code = exc.code
    if code is None:
        return 0
    if not isinstance(code, int):
        print(code, file=sys.stderr)
        return 1
    return code


def _fork(backend_main: BackendMain, argv: list[str], log_path: str, parent: int,
          die_with_parent: bool) -> int:
    """Fork one backend; returns its pid (in the parent; the child never returns).

    SIGTERM stays blocked across the fork, so the parent's handler never runs in the child
    and the parent knows the pid before it can be asked to pass SIGTERM on."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _child(backend_main, argv, log_path, parent, die_with_parent)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def run(backend_main: BackendMain, backends: list[tuple[str, list[str]]],
        die_with_parent: bool) -> int:
    # As the gc docs advise for fork without exec: no collections while importing (no
    # freed holes in the pages to share), freeze right before forking, enable in children.
    gc.disable()
    preload([argv for _, argv in backends])
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    children: dict[int, str] = {}
    stopping = False

    def stop_children(signum=None, frame=None):
        nonlocal stopping
        stopping = True
        for pid in children:  # not reaped yet, so the pid cannot belong to anyone else
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass

    signal.signal(signal.SIGTERM, stop_children)
    failed = False
    for log_path, argv in backends:
        if stopping:
            break
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            pid = _fork(backend_main, argv, log_path, parent, die_with_parent)
            children[pid] = argv[argv.index("--name") + 1] if "--name" in argv else str(pid)
        except OSError as exc:
            print(f"labs.backend --preload: cannot fork for {shlex.join(argv)}: {exc}",
                  file=sys.stderr, flush=True)
            failed = True
            break
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    if failed or stopping:
        stop_children()
    else:
        print(json.dumps({"pids": list(children)}), flush=True)
    # Let go of stdout (a pipe the starter reads until it closes).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    while children:
        pid, status = os.wait()
        name = children.pop(pid, None)
        if name is not None:
            code = os.waitstatus_to_exitcode(status)
            how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                   else f"exited with status {code}")
            print(f"labs.backend --preload: {name} (pid {pid}) {how}", file=sys.stderr,
                  flush=True)
    return 1 if failed else 0


def main(argv: list[str], backend_main: BackendMain) -> int:
    """``argv``: what follows ``--preload``; ``backend_main``: labs.backend.__main__.main."""
    args = build_parser().parse_args(argv)
    backends = [(log, shlex.split(text)) for log, text in args.backend]
    if args.die_with_parent:
        _die_with_parent()
    return run(backend_main, backends, args.die_with_parent)
