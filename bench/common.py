"""Shared machinery for LBLab's benchmarks (not tests: nothing here asserts a speed).

Theory of operation
-------------------
A benchmark is a short script that starts real processes on 127.0.0.1, drives them
with wrk, stops them, prints a plain table and writes the same numbers as JSON to
bench/results/<name>-<timestamp>.json together with the exact command line and
the environment (CPU, versions, git revision), so a number never travels without
the command that produced it.

Fairness ("on one core"): the proxy under test -- LBLab, nginx or HAProxy -- is
pinned to one CPU (`taskset -c PROXY_CPU`, single process / one worker / one
thread); wrk, the origin servers and any event reader are pinned to the other
(`CLIENT_CPU`). The origin is one nginx answering `return 200 "ok"` on as many
ports as a benchmark needs, so it is never the bottleneck and its cost is the
same for every proxy.

Everything started here goes through `Processes`, a context manager that starts
each child in its own session (so its whole process group can be signalled by
its own id) and stops every one of them on exit, also on errors and Ctrl-C.
Config files, pid files and logs live in a temporary directory that is removed
afterwards unless `keep` is set (then its path is printed for inspection).

Later benchmarks (L4 against HAProxy's TCP mode, TLS handshakes against nginx)
need only new config writers beside `haproxy_config` / `nginx_proxy_config`
(both already take a `mode`/listener shape that does not assume HTTP) and a wrk
or handshake driver; process handling, pinning and reporting stay as they are.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable

WRK = shutil.which("wrk") or "/usr/bin/wrk"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

# Core 1 for the proxy under test, core 0 for everything that drives or serves it.
PROXY_CPU = 1
CLIENT_CPU = 0

LOCAL = "127.0.0.1"


class BenchError(RuntimeError):
    """A benchmark could not run (a process did not start, a tool is missing...)."""


# ---------------------------------------------------------------- ports

# LBLAB_BENCH_PORTS=38000-38999 keeps every port a benchmark listens on inside one
# block (a machine shared by several people, each with a block); unset, the kernel picks.
PORT_RANGE_ENV = "LBLAB_BENCH_PORTS"


def _port_range() -> range | None:
    text = os.environ.get(PORT_RANGE_ENV, "").strip()
    if not text:
        return None
    try:
        low, high = (int(x) for x in text.split("-"))
    except ValueError:
        raise BenchError(f"{PORT_RANGE_ENV}={text!r}: write it as LOW-HIGH, e.g. 38000-38999")
    return range(low, high + 1)


def _bind_free(s: socket.socket, host: str) -> None:
    block = _port_range()
    if block is None:
        s.bind((host, 0))
        return
    start = random.randrange(len(block))
    for i in range(len(block)):
        try:
            s.bind((host, block[(start + i) % len(block)]))
            return
        except OSError:
            continue
    raise BenchError(f"no free port in {PORT_RANGE_ENV}={os.environ[PORT_RANGE_ENV]}")


def free_port(host: str = LOCAL) -> int:
    """A port nothing listens on right now (the kernel picks it, or LBLAB_BENCH_PORTS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        _bind_free(s, host)
        return s.getsockname()[1]


def free_ports(count: int, host: str = LOCAL) -> list[int]:
    """`count` distinct free ports (all held open until every one is picked)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            _bind_free(s, host)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int, host: str = LOCAL) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- CPU pinning

def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pinned(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """argv prefixed with `taskset -c cpu` (unchanged when cpu is None or taskset is missing)."""
    taskset = shutil.which("taskset")
    if cpu is None or taskset is None:
        return list(argv)
    if cpu >= cpu_count():
        raise BenchError(f"cannot pin to CPU {cpu}: this machine has {cpu_count()} "
                         "(use --proxy-cpu/--client-cpu, or --no-pin)")
    return [taskset, "-c", str(cpu), *argv]


# ---------------------------------------------------------------- processes

@dataclasses.dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        """Signal this child's own process group (started with its own session)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode


class Processes:
    """Starts children, and stops every one of them on exit (in reverse order)."""

    def __init__(self, keep: bool = False, prefix: str = "lblab-bench-"):
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.keep = keep
        self.procs: list[Proc] = []

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
        if self.keep:
            print(f"(kept work dir {self.dir})", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def start(self, name: str, argv: Sequence[str], *, cpu: int | None = None,
              env: dict | None = None, cwd: Path = REPO,
              ready_line: str | None = None, ready_port: int | Iterable[int] | None = None,
              timeout: float = 20.0) -> Proc:
        """Start argv (pinned to `cpu`), wait until it is ready, return it.

        Ready means `ready_line` appeared in its output and/or every `ready_port`
        accepts connections. Output (stdout and stderr) goes to a log file in the
        work dir; a child that dies or is not ready in time raises with its last
        lines of output.
        """
        argv = pinned(cpu, argv)
        log = self.path("logs", f"{name}.log")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd, env=full_env,
                                     start_new_session=True)
        proc = Proc(name, list(argv), popen, log)
        self.procs.append(proc)
        ports = [ready_port] if isinstance(ready_port, int) else list(ready_port or [])
        deadline = time.monotonic() + timeout
        while True:
            if not proc.alive():
                raise BenchError(f"{name} exited with {popen.returncode} before it was ready\n"
                                 f"command: {shlex.join(argv)}\n{proc.tail()}")
            line_ok = ready_line is None or ready_line in proc.output()
            ports = [p for p in ports if not port_open(p)]
            if line_ok and not ports:
                return proc
            if time.monotonic() > deadline:
                what = (f"line {ready_line!r}" if not line_ok else f"ports {ports}")
                proc.stop()
                raise BenchError(f"{name} not ready after {timeout:.0f}s (waiting for {what})\n"
                                 f"command: {shlex.join(argv)}\n{proc.tail()}")
            time.sleep(0.05)

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        while self.procs:
            proc = self.procs.pop()
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others, but say so
                print(f"warning: could not stop {proc.name} (pid {proc.pid}): {exc}",
                      file=sys.stderr)


# ---------------------------------------------------------------- wrk

# A done() hook: wrk's own exact percentiles (microseconds) and error counts as one
# JSON line. Only done() is defined, so the request path stays wrk's fast C path.
_WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
    "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d," ..
    "\"mean_us\":%.3f,\"stdev_us\":%.3f,\"max_us\":%d," ..
    "\"p50_us\":%d,\"p75_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"p999_us\":%d}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # -> milliseconds
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


@dataclasses.dataclass
class WrkResult:
    url: str
    command: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    transfer_bytes_per_s: float = 0.0
    latency_avg_ms: float = 0.0
    latency_stdev_ms: float = 0.0
    latency_max_ms: float = 0.0
    percentiles_ms: dict = dataclasses.field(default_factory=dict)  # "50" -> ms
    errors: dict = dataclasses.field(default_factory=dict)  # connect/read/write/timeout
    non_2xx_3xx: int = 0
    cpu: dict = dataclasses.field(default_factory=dict)  # see CpuMeter
    raw: str = ""

    @property
    def p50_ms(self) -> float | None:
        return self.percentiles_ms.get("50")

    @property
    def p99_ms(self) -> float | None:
        return self.percentiles_ms.get("99")

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + self.non_2xx_3xx

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("raw")
        d["raw_output"] = self.raw.splitlines()
        return d


def proxy_pct(result: "WrkResult", name: str) -> float | None:
    """CPU % (of one core) process group `name` used during the measured run."""
    return result.cpu.get("process_pct", {}).get(name)


def system_pct(result: "WrkResult", name: str) -> float | None:
    """The kernel's part of `proxy_pct` (system calls, loopback TCP work)."""
    return result.cpu.get("process_system_pct", {}).get(name)


def per_cpu_second(result: "WrkResult", name: str) -> float | None:
    """Requests per CPU-second of process group `name`: throughput per core, whatever
    share of the core it actually got (robust to other load on a shared machine;
    meaningful when the proxy is CPU-bound)."""
    pct = proxy_pct(result, name)
    return result.rps / (pct / 100.0) if pct else None


def other_load(result: "WrkResult", cpu: int | None, name: str) -> float | None:
    """How busy CPU `cpu` was with anything but process group `name` during the run
    (other programs on a shared machine, plus the kernel's network work)."""
    busy = result.cpu.get("core_busy_pct", {}).get(str(cpu)) if cpu is not None else None
    pct = proxy_pct(result, name)
    return None if busy is None or pct is None else max(0.0, busy - pct)


def parse_wrk(output: str, url: str = "", command: str = "") -> WrkResult:
    """Parse wrk's text report (with --latency), refined by the WRKJSON line when present."""
    r = WrkResult(url=url, command=command, raw=output)
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)\s", output, re.M)
    if m:
        r.latency_avg_ms, r.latency_stdev_ms, r.latency_max_ms = (_ms(x) for x in m.groups())
    dist = re.search(r"Latency Distribution\s*\n((?:\s+[\d.]+%\s+\S+\s*\n)+)", output)
    if dist:
        for pct, value in re.findall(r"([\d.]+)%\s+(\S+)", dist.group(1)):
            r.percentiles_ms[pct.rstrip("0").rstrip(".") if "." in pct else pct] = _ms(value)
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)(\w+) read", output)
    if m:
        r.requests = int(m.group(1))
        r.seconds = _ms(m.group(2) + m.group(3)) / 1e3
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        r.errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        r.non_2xx_3xx = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if m:
        r.rps = float(m.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", output)
    if m:
        r.transfer_bytes_per_s = float(m.group(1)) * _SIZE_UNITS.get(m.group(2), 1)
    m = re.search(r"^WRKJSON (\{.*\})\s*$", output, re.M)
    if m:
        j = json.loads(m.group(1))
        r.requests = j["requests"]
        r.seconds = j["duration_us"] / 1e6
        if r.seconds:
            r.rps = j["requests"] / r.seconds
        r.latency_avg_ms = j["mean_us"] / 1e3
        r.latency_stdev_ms = j["stdev_us"] / 1e3
        r.latency_max_ms = j["max_us"] / 1e3
        for key in ("50", "75", "90", "99", "999"):
            label = "99.9" if key == "999" else key
            r.percentiles_ms[label] = j[f"p{key}_us"] / 1e3
        r.errors = {k: j[k] for k in ("connect", "read", "write", "timeout")}
        r.non_2xx_3xx = j["status"]
    return r


@dataclasses.dataclass
class WrkOptions:
    threads: int = 1
    connections: int = 50
    duration: int = 10  # whole seconds (wrk's unit)
    warmup: int = 1  # an unrecorded run first, so every target starts warm
    timeout: int = 5
    cpu: int | None = CLIENT_CPU


def run_wrk(url: str, opts: WrkOptions, work_dir: Path, headers: Sequence[str] = (),
            watch: Sequence["Proc"] = (), on_start=None, on_end=None) -> WrkResult:
    """Run wrk against url (after an unrecorded warm-up) and return the parsed result.

    During the measured run only, the CPU used by each process group in `watch`
    and the busy share of every core are recorded (`result.cpu`), so a reader can
    tell a proxy that saturated its core from one that waited on something else.
    `on_start` / `on_end` are called just around the measured run (profiling).
    """
    script = work_dir / "wrk-report.lua"
    if not script.exists():
        script.write_text(_WRK_LUA)

    def argv(duration: float) -> list[str]:
        cmd = [WRK, f"-t{opts.threads}", f"-c{opts.connections}", f"-d{_dur(duration)}",
               f"--timeout={_dur(opts.timeout)}", "--latency", "-s", str(script)]
        for h in headers:
            cmd += ["-H", h]
        return pinned(opts.cpu, cmd + [url])

    if opts.warmup > 0:
        _run(argv(opts.warmup), opts.warmup + 30)
    cmd = argv(opts.duration)
    if on_start:
        on_start()
    meter = CpuMeter(watch)
    try:
        out = _run(cmd, opts.duration + 30)
    finally:
        cpu = meter.stop()
        if on_end:
            on_end()
    result = parse_wrk(out, url, shlex.join(cmd))
    result.cpu = cpu
    if result.requests == 0:
        raise BenchError(f"wrk made no requests against {url}:\n{out}")
    return result


def _dur(seconds: float) -> str:
    # wrk takes whole seconds (s, m, h; no ms) for -d and --timeout.
    return f"{max(1, round(seconds))}s"


def _run(argv: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{shlex.join(argv)} took longer than {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} failed ({done.returncode}):\n"
                         f"{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


# ---------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def group_cpu_seconds(pgid: int) -> float:
    """user+system CPU seconds of every live process in process group `pgid`."""
    user, system = group_cpu_split(pgid)
    return user + system


def group_cpu_split(pgid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of every live process in process group `pgid`."""
    user = system = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        if int(fields[2]) == pgid:  # fields: state ppid pgrp session ...
            user += int(fields[11])  # utime
            system += int(fields[12])  # stime
    return user / _TICK, system / _TICK


def core_times() -> dict[int, tuple[int, int]]:
    """{cpu: (busy ticks, total ticks)} from /proc/stat."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            m = re.match(r"cpu(\d+)\s+(.*)", line)
            if m:
                v = [int(x) for x in m.group(2).split()]
                idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
                out[int(m.group(1))] = (sum(v[:8]) - idle, sum(v[:8]))
    return out


class CpuMeter:
    """CPU used by some process groups, and how busy each core was, over a window."""

    def __init__(self, procs: Sequence["Proc"] = ()):
        self.procs = list(procs)
        self.t0 = time.monotonic()
        self.cores0 = core_times()
        self.groups0 = {p.name: group_cpu_split(p.pid) for p in self.procs}

    def stop(self) -> dict:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        cores1 = core_times()
        out: dict = {"seconds": round(elapsed, 3), "process_pct": {},
                     "process_system_pct": {}, "core_busy_pct": {}}
        for p in self.procs:
            user0, system0 = self.groups0[p.name]
            user1, system1 = group_cpu_split(p.pid)
            used = (user1 - user0) + (system1 - system0)
            out["process_pct"][p.name] = round(100 * used / elapsed, 1)
            # The kernel's share (system calls, loopback TCP work done on its behalf).
            out["process_system_pct"][p.name] = round(100 * (system1 - system0) / elapsed, 1)
        for cpu, (busy1, total1) in cores1.items():
            busy0, total0 = self.cores0.get(cpu, (0, 0))
            if total1 > total0:
                out["core_busy_pct"][str(cpu)] = round(100 * (busy1 - busy0) / (total1 - total0), 1)
        return out


def system_busy(seconds: float = 1.0) -> dict:
    """How busy each core is right now (before a run: is anything else loading the box?)."""
    meter = CpuMeter()
    time.sleep(seconds)
    return meter.stop()["core_busy_pct"]


def warn_if_busy(threshold: float = 10.0, wait: float = 0.0) -> dict:
    """Measure the cores before starting; warn when something else runs.

    With `wait`, keep measuring (one second at a time) for up to that many
    seconds until every core is below `threshold` (a shared machine).
    """
    deadline = time.monotonic() + wait
    busy = system_busy(1.0)
    while wait and any(p > threshold for p in busy.values()) and time.monotonic() < deadline:
        busy = system_busy(1.0)
    hot = {cpu: pct for cpu, pct in busy.items() if pct > threshold}
    if hot:
        print("warning: the machine is busy before the benchmark starts "
              + ", ".join(f"CPU {cpu} {pct:.0f}%" for cpu, pct in sorted(hot.items()))
              + "; numbers will be noisy (see bench/README.md)", file=sys.stderr)
    return busy


# ---------------------------------------------------------------- nginx

def _nginx_main(work: Path, events: int = 4096) -> str:
    """The top of every nginx config: foreground, one worker, everything in `work`."""
    return f"""\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections {events}; }}
"""


def _nginx_http_common(work: Path) -> str:
    return f"""\
    access_log off;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_timeout 65s;
    # nginx closes a keep-alive connection after 1000 requests by default; the other
    # proxies do not, so lift it (else wrk pays reconnects only against nginx).
    keepalive_requests 1000000;
"""


def nginx_origin_config(work: Path, ports: Sequence[int], body: str = "ok",
                        big_file: Path | None = None) -> str:
    """One nginx answering 200 `body` on every port (every path, /health included);
    with `big_file`, /big answers that file (sendfile)."""
    big = (f"        location = /big {{ default_type application/octet-stream; "
           f"alias {big_file}; }}\n" if big_file is not None else "")
    servers = "\n".join(
        f"""    server {{
        listen {LOCAL}:{port} reuseport backlog=4096;
{big}        location / {{ default_type text/plain; return 200 "{body}"; }}
    }}""" for port in ports)
    common = _nginx_http_common(work) + ("    sendfile on;\n" if big_file is not None else "")
    return _nginx_main(work, events=max(4096, 64 * len(ports))) + (
        "http {\n" + common + servers + "\n}\n")


def nginx_proxy_config(work: Path, listen_port: int, backends: Sequence[tuple[str, int]],
                       mode: str = "http", keepalive: int = 64) -> str:
    """nginx as a round-robin reverse proxy with upstream keep-alive.

    mode "http" is proxy_pass with HTTP/1.1 to the upstream; "stream" (for an L4
    bench later) is the stream module (needs the module loaded on this system).
    """
    upstream = "\n".join(f"        server {h}:{p};" for h, p in backends)
    if mode == "stream":
        return _nginx_main(work) + f"""\
stream {{
    upstream origin {{
{upstream}
    }}
    server {{ listen {LOCAL}:{listen_port} reuseport; proxy_pass origin; }}
}}
"""
    return _nginx_main(work) + "http {\n" + _nginx_http_common(work) + f"""\
    upstream origin {{
{upstream}
        keepalive {keepalive};
        keepalive_requests 1000000;
    }}
    server {{
        listen {LOCAL}:{listen_port} reuseport backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
}}
"""


def start_nginx(procs: Processes, name: str, config_text: str, ports: Sequence[int],
                cpu: int | None) -> Proc:
    work = procs.path(name)
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(config_text)
    check = subprocess.run([NGINX, "-t", "-p", str(work), "-c", str(conf)],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"nginx refused {conf}:\n{check.stderr}")
    return procs.start(name, [NGINX, "-p", str(work), "-c", str(conf)], cpu=cpu,
                       ready_port=ports)


def start_origin(procs: Processes, ports: Sequence[int], cpu: int | None = CLIENT_CPU,
                 big_kb: int = 0) -> Proc:
    """The origin nginx; with big_kb, /big answers that many KiB."""
    big_file = None
    if big_kb:
        big_file = procs.path("origin-files", "big.bin")
        big_file.write_bytes(bytes(range(256)) * (big_kb * 4))
    return start_nginx(procs, "origin", nginx_origin_config(procs.path("origin"), ports,
                                                            big_file=big_file), ports, cpu)


# ---------------------------------------------------------------- HAProxy

def haproxy_config(work: Path, listen_port: int, backends: Sequence[tuple[str, int]],
                   mode: str = "http") -> str:
    """HAProxy with one thread, round robin, no logging; mode "http" or "tcp"."""
    servers = "\n".join(f"    server s{i} {h}:{p}" for i, (h, p) in enumerate(backends, 1))
    http_only = "    option http-keep-alive\n    http-reuse always\n" if mode == "http" else ""
    return f"""\
global
    nbthread 1
    maxconn 4096
    pidfile {work}/haproxy.pid
    stats socket {work}/haproxy.sock mode 600 level admin

defaults
    mode {mode}
    timeout connect 2s
    timeout client 30s
    timeout server 30s
{http_only}
frontend fe
    bind {LOCAL}:{listen_port}
    default_backend be

backend be
    balance roundrobin
{servers}
"""


def start_haproxy(procs: Processes, name: str, config_text: str, port: int,
                  cpu: int | None) -> Proc:
    work = procs.path(name)
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "haproxy.cfg"
    conf.write_text(config_text)
    check = subprocess.run([HAPROXY, "-c", "-f", str(conf)], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"haproxy refused {conf}:\n{check.stdout}{check.stderr}")
    return procs.start(name, [HAPROXY, "-db", "-f", str(conf)], cpu=cpu, ready_port=port)


# ---------------------------------------------------------------- LBLab

LBLAB_READY = "lblab proxy listening"


def lblab_pool(backends: Sequence[tuple[str, int]], *, prefix: str = "b",
               algorithm: str = "round_robin", health: dict | None = None) -> dict:
    """One pool's config data; backend names are prefix1..prefixN."""
    pool: dict = {
        "balancer": {"algorithm": algorithm},
        "backends": [{"name": f"{prefix}{i}", "address": f"{h}:{p}"}
                     for i, (h, p) in enumerate(backends, 1)],
    }
    if health is not None:
        pool["health"] = dict(health)
    return pool


def lblab_config(listen_port: int, admin_port: int, pools: dict[str, dict],
                 traffic_pool: str | None = None, access_log: str | None = None,
                 protocol: str = "http") -> dict:
    """A proxy config (plain data, the YAML shape of proxy/config.py).

    One listener `web` sending everything to `traffic_pool` (default: the first
    pool): protocol "http" through one catch-all route, "tcp" (L4) straight to
    the pool. Other pools exist only to be health-checked.
    """
    traffic_pool = traffic_pool or next(iter(pools))
    listener: dict = {"bind": f"{LOCAL}:{listen_port}", "protocol": protocol}
    config: dict = {"admin": {"listen": f"{LOCAL}:{admin_port}"},
                    "listeners": {"web": listener}}
    if protocol == "http":
        listener["routes"] = ["all"]
        config["routes"] = {"all": {"match": {}, "forward": traffic_pool}}
    else:
        listener["pool"] = traffic_pool
    config["pools"] = pools
    config["access_log"] = access_log
    return config


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def check_lblab_config(data: dict) -> None:
    """Validate with the proxy's own loader (raises BenchError listing every problem)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from proxy.config import ConfigError, parse_config

    try:
        parse_config(data)
    except ConfigError as exc:
        raise BenchError("generated proxy config refused:\n  " + "\n  ".join(exc.lines()))


def lblab_command(config_path: Path, profile_out: Path | None = None) -> list[str]:
    if profile_out is not None:
        return [PYTHON, str(BENCH / "profile_proxy.py"), "--out", str(profile_out),
                "--", "--config", str(config_path), "--grace", "1"]
    return [PYTHON, "-m", "proxy", "--config", str(config_path), "--grace", "1"]


def start_lblab(procs: Processes, name: str, config: dict, listen_port: int,
                cpu: int | None, profile_out: Path | None = None,
                env: dict | None = None) -> Proc:
    check_lblab_config(config)
    path = write_yaml(procs.path(name, "proxy.yaml"), config)
    return procs.start(name, lblab_command(path, profile_out), cpu=cpu, env=env,
                       ready_line=LBLAB_READY, ready_port=listen_port, timeout=30)


def export_revision(rev: str, dest: Path) -> Path:
    """The proxy package at git revision `rev`, unpacked under `dest` (run from there)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "proxy"],
                             capture_output=True)
    if archive.returncode != 0:
        raise BenchError(f"git archive {rev} proxy failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    # The profiler wrapper puts its own repo root first on sys.path: a copy in the
    # exported tree profiles that tree's proxy.
    (dest / "bench").mkdir(exist_ok=True)
    shutil.copy(BENCH / "profile_proxy.py", dest / "bench" / "profile_proxy.py")
    return dest


def start_lblab_at(procs: Processes, name: str, config: dict, port: int, cpu, tree: Path,
                   profile_out: Path | None = None, env: dict | None = None):
    """`python -m proxy` run from `tree` (an exported revision) instead of the repo."""
    check_lblab_config(config)
    path = write_yaml(procs.path(name, "proxy.yaml"), config)
    argv = lblab_command(path, profile_out)
    if profile_out is not None:
        argv[1] = str(tree / "bench" / "profile_proxy.py")
    return procs.start(name, argv, cpu=cpu, cwd=tree, env=env,
                       ready_line=LBLAB_READY, ready_port=port, timeout=30)


def lblab_runnable() -> str | None:
    """None when `python -m proxy` exists here, else why not."""
    if not (REPO / "proxy" / "__main__.py").exists():
        return "proxy/__main__.py does not exist yet (the proxy is still being built)"
    return None


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """A tiny blocking GET (for /metrics and /state snapshots around a run)."""
    import http.client

    conn = http.client.HTTPConnection(LOCAL, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def metrics_snapshot(admin_port: int) -> dict[str, float]:
    """GET /metrics parsed to {"name{labels}": value} (empty when unavailable)."""
    try:
        status, body = http_get(admin_port, "/metrics")
    except OSError:
        return {}
    if status != 200:
        return {}
    out = {}
    for line in body.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[key] = float(value)
    return out


def wait_subscribers(admin_port: int, count: int = 1, timeout: float = 15.0) -> int:
    """Wait until GET /state reports at least `count` open /events streams."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            status, body = http_get(admin_port, "/state")
            if status == 200:
                seen = int(json.loads(body).get("subscribers", -1))
                if seen >= count:
                    return seen
        time.sleep(0.1)
    raise BenchError(f"no /events subscriber after {timeout:.0f}s "
                     f"(GET /state says subscribers={seen})")


# ---------------------------------------------------------------- event reader

def start_event_reader(procs: Processes, name: str, admin_port: int, stats_path: Path,
                       cpu: int | None = CLIENT_CPU, types: str | None = None,
                       query: str = "") -> Proc:
    """A plain NDJSON reader of GET /events (bench/event_reader.py) in its own process;
    `query` is the stream's options (e.g. "requests=sample&max_per_s=200")."""
    argv = [PYTHON, str(BENCH / "event_reader.py"), "--url",
            f"http://{LOCAL}:{admin_port}/events" + (f"?{query}" if query else ""),
            "--stats", str(stats_path)]
    if types:
        argv += ["--types", types]
    return procs.start(name, argv, cpu=cpu, ready_line="event reader connected", timeout=15)


def stop_and_read_json(procs: Processes, proc: Proc, path: Path, timeout: float = 10.0) -> dict:
    """Stop a child that writes a JSON stats file when it stops, and return that file."""
    procs.stop(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with contextlib.suppress(ValueError):
                return json.loads(path.read_text())
        time.sleep(0.1)
    raise BenchError(f"{proc.name} wrote no stats to {path}\n{proc.tail()}")


# ---------------------------------------------------------------- reporting

def table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A plain text table; columns are (key, heading); values are already strings."""
    widths = [max(len(h), *(len(str(r.get(k, ""))) for r in rows)) for k, h in columns]
    line = lambda cells: "  ".join(  # noqa: E731
        (str(c).ljust(w) if i == 0 else str(c).rjust(w)) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line([h for _, h in columns]), line(["-" * w for w in widths])]
    out += [line([r.get(k, "") for k, _ in columns]) for r in rows]
    return "\n".join(out)


def fmt_rps(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def _version(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (done.stdout + done.stderr).strip().splitlines()[0]
    return "unknown"


def environment() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    rev = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "proxy"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cpus": cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": _version([WRK, "-v"]),
        "nginx": _version([NGINX, "-v"]),
        "haproxy": _version([HAPROXY, "-v"]),
        "git": rev + (" (proxy/ has uncommitted changes)" if dirty else ""),
    }


def command_line() -> str:
    """How this run was started, relative to the repo (for the report)."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(REPO)
    return shlex.join([".venv/bin/python", str(script), *sys.argv[1:]])


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now().astimezone()
    path = RESULTS / f"{name}-{now.strftime('%Y%m%d-%H%M%S')}.json"
    full = {"benchmark": name, "date": now.isoformat(timespec="seconds"),
            "command": command_line(), "environment": environment(), **payload}
    path.write_text(json.dumps(full, indent=2, default=str) + "\n")
    return path


def header(title: str) -> str:
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"{title}\n$ {command_line()}\n# {now}, {cpu_count()} CPUs"


def add_common_args(parser, duration: int = 10, connections: int = 50) -> None:
    """wrk and pinning options every benchmark shares."""
    g = parser.add_argument_group("load (wrk)")
    g.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    g.add_argument("-c", "--connections", type=int, default=connections,
                   help=f"wrk connections (default {connections})")
    g.add_argument("-d", "--duration", type=int, default=duration,
                   help=f"seconds measured per target (default {duration:g})")
    g.add_argument("--warmup", type=int, default=1,
                   help="unrecorded seconds of load before each measurement (default 1)")
    p = parser.add_argument_group("pinning")
    p.add_argument("--proxy-cpu", type=int, default=PROXY_CPU,
                   help=f"CPU for the proxy under test (default {PROXY_CPU})")
    p.add_argument("--client-cpu", type=int, default=CLIENT_CPU,
                   help=f"CPU for wrk, origin and readers (default {CLIENT_CPU})")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS",
                        help="before starting, wait up to this long for the cores to be idle "
                             "(< 10%% busy) on a shared machine (default 0: just warn)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary work dir (configs, logs) and print its path")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results JSON")


def cpus(args) -> tuple[int | None, int | None]:
    """(proxy_cpu, client_cpu) from the parsed common options."""
    if args.no_pin:
        return None, None
    return args.proxy_cpu, args.client_cpu


def wrk_options(args) -> WrkOptions:
    return WrkOptions(threads=args.threads, connections=args.connections,
                      duration=args.duration, warmup=args.warmup, cpu=cpus(args)[1])


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def handle_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so `with Processes()` cleans up."""
    def _raise(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _raise)


# ---------------------------------------------------------------- callgrind (instructions)

def check_tree_and_valgrind(parser, tree: str) -> Path:
    """The proxy tree an instruction count runs (refused, via ``parser``, when it has no
    proxy package or valgrind is missing)."""
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            parser.error(f"{tool} is not installed (Debian: apt-get install valgrind)")
    path = Path(tree).resolve()
    if not (path / "proxy" / "__main__.py").exists():
        parser.error(f"{path} has no proxy package (give the repo or an exported revision)")
    return path


def proxy_under_callgrind(tree: Path, config_path: Path, out: Path) -> subprocess.Popen:
    """`python -m proxy` from ``tree`` under callgrind, instrumentation off until switched."""
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         PYTHON, "-m", "proxy", "--config", str(config_path)], cwd=tree,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until something accepts on ``port`` (a proxy under valgrind starts slowly)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((LOCAL, port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("the proxy did not start under valgrind") from None
            time.sleep(0.5)


def callgrind_switch(proc: subprocess.Popen, on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(proc.pid)],
                   check=True, capture_output=True)


def callgrind_total(out: Path) -> int:
    """Instructions counted in a callgrind output file."""
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            total = max(total, int(line.split()[1]))
    return total
