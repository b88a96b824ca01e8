"""Child processes, seen from the outside: start, probe, measure, stop (Linux, stdlib only).

Every part (a toy backend, a proxy, daphne...) runs in its own session, hence its own
process group whose id is its pid. That gives two things: Ctrl-C in the launcher's terminal
reaches the launcher only (it then stops the parts in order instead of every process
racing to print a traceback), and stopping a part signals its whole group, so a part that
forks (gunicorn workers, locust) leaves nothing behind.

A part may have been started by another process (the launcher created the sandbox, the
site restarts one of its backends), so nothing here needs the ``Popen`` object: a part is
identified by its pid *and* the kernel's start time of that pid (``/proc/<pid>/stat``
field 22), which tells a live part from an unrelated process that reused the pid. A zombie
counts as dead. ``Popen`` objects, when we have them, are only polled to reap zombies.
"""
from __future__ import annotations

import ctypes
import errno
import http.client
import os
import select
import signal
import socket
import subprocess
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Mapping, Sequence

PR_SET_PDEATHSIG = 1


def _stat_fields(pid: int) -> list[str] | None:
    # os.open/os.read, not pathlib: called for every process of the machine by the scans
    # below, which a busy host (a cohort: hundreds of processes) makes a CPU cost.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    try:
        raw = os.read(fd, 4096).decode("utf-8", "replace")
    except ProcessLookupError:  # it ended between the open and the read
        return None
    finally:
        os.close(fd)
    # comm (field 2) is in parentheses and may hold spaces: split after the last ')'.
    head, _, rest = raw.rpartition(")")
    return [head.split(" (", 1)[0], "comm"] + rest.split()


def start_ticks(pid: int) -> int | None:
    """The pid's start time in clock ticks since boot, None when there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[21]) if fields else None


def pid_alive(pid: int | None, ticks: int | None = None) -> bool:
    """Running (not a zombie), and the same process as when ``ticks`` was recorded."""
    if not pid:
        return False
    fields = _stat_fields(pid)
    if fields is None or fields[2] in ("Z", "X"):
        return False
    return ticks is None or int(fields[21]) == ticks


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[3]) if fields else None


def children_of(pid: int) -> list[int]:
    """The live children of ``pid``, from the kernel's list per thread (no scan of /proc)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                out += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return [c for c in out if (f := _stat_fields(c)) and f[2] not in ("Z", "X")]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...)."""
    out, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (the interpreter, OpenSSL...) divided among the
    processes sharing them, so the sum over processes is what they really cost together."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def tree_rss_bytes(pid: int, kind: str = "rss") -> int:
    measure = pss_bytes if kind == "pss" else rss_bytes
    return sum(measure(p) for p in [pid, *descendants(pid)])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: Sequence[str], log_path: Path, *, cwd: Path, env: Mapping[str, str] | None = None,
          die_with_parent: bool = False, stdout_pipe: bool = False) -> subprocess.Popen:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``.

    ``die_with_parent`` asks the kernel to SIGTERM the child when the thread that started
    it ends: right for the launcher (which starts everything from its main thread and may
    be killed with SIGKILL), wrong for a web server whose worker threads come and go.
    ``stdout_pipe``: only stderr goes to the log, stdout is a pipe (``read_line``) for a
    program that answers its starter there.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(argv), cwd=cwd, env=child_env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log if stdout_pipe else subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first line ``proc`` writes on its stdout pipe; "" when it closes it (or exits)
    first or ``timeout`` passes."""
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            return ""
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def signal_group(pid: int, sig: int, ticks: int | None = None) -> bool:
    """Send ``sig`` to the part's process group (its pid); False when nothing was there.

    With ``ticks``, a pid that now belongs to another process is left alone. A pid that no
    longer exists may still name a live group (children of a dead leader): Linux does not
    reuse a pid while a group carries it, so signalling that group is safe."""
    now = start_ticks(pid)
    if ticks is not None and now is not None and now != ticks:
        return False  # reused by a stranger: never signal its group
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_groups() -> set[int]:
    """Process group ids that hold at least one live (non-zombie) process."""
    groups = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and fields[2] not in ("Z", "X"):
                groups.add(int(fields[4]))
    return groups


def stop_groups(parts: Iterable[tuple[int, int | None]], grace: float = 5.0,
                popens: Iterable[subprocess.Popen] = ()) -> None:
    """SIGTERM every (pid, ticks) group at once, SIGKILL what is left after ``grace``."""
    parts = [(pid, ticks) for pid, ticks in parts if pid]
    popens = list(popens)
    signalled = {pid for pid, ticks in parts if signal_group(pid, signal.SIGTERM, ticks)}
    deadline = time.monotonic() + grace
    while signalled and time.monotonic() < deadline:
        reap(popens)
        # Signal 0 says whether a group still has any process (zombies too): only then is
        # /proc scanned, to tell a live one from zombies its parent has yet to reap.
        if not any(_group_exists(pgid) for pgid in signalled) or not signalled & live_groups():
            break
        time.sleep(0.05)
    reap(popens)
    for pid in signalled & live_groups():
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 2.0
    for p in popens:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


def reap(popens: Iterable[subprocess.Popen]) -> None:
    for p in popens:
        p.poll()


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log yet)"
    return "\n".join(deque(text.splitlines(), maxlen=lines))


# ---------------------------------------------------------------- probes

def connect_host(host: str) -> str:
    """Where to connect to reach a server bound to ``host`` (a wildcard means loopback)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def url_host(host: str) -> str:
    host = connect_host(host)
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_get(url_host: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, dict, bytes]:
    """One GET on a fresh connection: (status, headers, body). Raises OSError when down."""
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "lblab-sandbox"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from None
    finally:
        conn.close()


def http_status(host: str, port: int, path: str, timeout: float = 1.0) -> tuple[int | None, str]:
    """(status, "") when something answered HTTP, else (None, why not)."""
    try:
        return http_get(host, port, path, timeout)[0], ""
    except socket.timeout:
        return None, f"no answer within {timeout:g}s"
    except OSError as exc:
        return None, exc.strerror or str(exc)


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """Could a server bind ``host:port`` now? (SO_REUSEADDR like asyncio servers use, so
    a port whose old connections sit in TIME_WAIT counts as free; a listener does not.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    # Something on 0.0.0.0 (or a socket without SO_REUSEADDR) can still answer here.
    return not tcp_open(host, port, timeout=0.2)
