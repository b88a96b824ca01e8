"""Inside a sandbox container: run its parts, relay their ports to Unix sockets, say when
they are ready. The container's command is ``python /app/labs/sandbox/container_inside.py
--spec /sandbox/spec.json`` (labs/sandbox/containers.py writes the spec and starts it).

Why a script of its own, with the standard library only: a sandbox's start time is mostly
CPU (three interpreters starting under the container's CPU cap), and run as a script this
file imports nothing of the labs package (whose ``__init__`` pulls in the process driver,
YAML and more), so the children are spawned within milliseconds of the container starting
and the imports they would have waited for are not paid at all. Every command it runs comes
ready-made in the spec.

Readiness without probing from outside: ``ready SECONDS`` on ``control.sock`` answers as
soon as every relayed port accepts a connection in the container's own namespace (tried
every 10 ms on loopback, where a refusal costs microseconds), or says which do not and
which children exited. The site then makes one request through its gateway to check the whole path.

What the site asks besides: ``listening``, the ports something listens on (read from the
kernel, never by connecting: a learner's listener records every connection). What a graded
run asks (labs/framework/runner.py through the driver): ``states``,
each part's pid in the container's PID namespace and whether it runs (the run's watchdog
tells a planned restart from a death with them), and ``kill PART``, SIGKILL to one part (a
crash fault). The toy backends are forked by one preloaded parent, which prints their pids
on its stdout once (labs/backend/preload.py): read here, so each backend is its own part.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

LISTEN = "0A"  # the TCP state column of /proc/net/tcp


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Serve:
    """PID 1's child in a sandbox container: runs the parts, relays their sockets, obeys
    ``control.sock``. Stops everything on SIGTERM (the engine's stop)."""

    def __init__(self, spec: dict, root: Path):
        self.spec = spec
        self.root = root
        self.sock_dir = root / "sock"
        self.children: dict[str, subprocess.Popen] = {}
        self.forked: dict[str, int] = {}  # backend -> pid, as the preloaded parent forked it

    def _spawn(self, part: str, argv: list[str], pids_on_stdout: bool = False) -> None:
        log = open(self.root / f"{part}.log", "ab")
        self.children[part] = subprocess.Popen(
            argv, stdout=subprocess.PIPE if pids_on_stdout else log, stderr=log,
            start_new_session=True, cwd="/app")
        log.close()
        if pids_on_stdout:
            threading.Thread(target=self._read_forked, args=(self.children[part],),
                             daemon=True).start()

    def _read_forked(self, proc: subprocess.Popen) -> None:
        """The preloaded parent's one line {"pids": [...]}, in the order of the backends."""
        with proc.stdout:
            line = proc.stdout.readline()
        try:
            pids = json.loads(line)["pids"]
        except (ValueError, KeyError, TypeError):
            return  # it failed before forking: its log says why; the backends are down
        self.forked = dict(zip(self.spec["backends"], pids))

    @property
    def commands(self) -> dict:
        if "commands" not in self.spec:
            # A spec written without them (another driver's): made here, at the cost of
            # the imports this script otherwise avoids.
            from labs.sandbox.containers import spawn_commands

            self.spec["commands"] = spawn_commands(self.spec["backends"], self.spec["config"])
        return self.spec["commands"]

    def start_all(self) -> None:
        self._spawn("backends", self.commands["backends"], pids_on_stdout=True)
        self._spawn("proxy", self.commands["proxy"])

    def restart(self, part: str) -> None:
        port = self.spec["backends"].get(part)
        if part != "proxy" and port is None:
            raise ValueError(f"no part {part!r}")
        if part == "proxy":
            self._stop(self.children.pop("proxy", None))
            self._spawn("proxy", self.commands["proxy"])
            return
        # A backend forked by the preloaded parent: by its pid, or by the port it listens on.
        pid, running = self.state(part)
        if running and part not in self.children:
            self._kill_group(pid)
        else:
            self._kill_listener(port)
        self._stop(self.children.pop(part, None))
        self._spawn(part, self.commands["backend"][part])

    def state(self, part: str) -> tuple[int | None, bool]:
        """(pid, running) of a part: the proxy, or a backend (restarted alone: our child;
        else the process the preloaded parent forked for it)."""
        if part in self.children:
            child = self.children[part]
            return child.pid, child.poll() is None
        if part not in self.spec["backends"]:
            raise ValueError(f"no part {part!r}")
        pid = self.forked.get(part)
        if pid is None:  # its pids not read yet: the parent stands for its children
            parent = self.children.get("backends")
            return None, parent is not None and parent.poll() is None
        return pid, _running(pid)

    def states(self) -> dict:
        return {part: dict(zip(("pid", "running"), self.state(part)))
                for part in ["proxy", *self.spec["backends"]]}

    def kill(self, part: str) -> None:
        """SIGKILL the part's process group (a crash: no goodbye), and wait until it is
        gone, so that ``states`` says so at once."""
        pid, running = self.state(part)
        if not running or pid is None:
            return
        self._kill_group(pid)
        child = self.children.get(part)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if (child.poll() is not None) if child is not None else not _running(pid):
                return
            time.sleep(0.01)

    @staticmethod
    def _kill_group(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    @staticmethod
    def _kill_listener(port: int) -> None:
        inode = None
        with contextlib.suppress(OSError):
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(f":{port:04X}") and fields[3] == LISTEN:
                    inode = fields[9]
        if not inode:
            return
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                for fd in (proc / "fd").iterdir():
                    if os.readlink(fd) == f"socket:[{inode}]":
                        os.kill(int(proc.name), signal.SIGKILL)
                        return

    @staticmethod
    def _stop(proc: subprocess.Popen | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    async def ready(self, timeout: float) -> dict:
        """Every relayed port accepting (or, after ``timeout``, what is not, and why).

        A connect to a loopback port of our own namespace: refused at once while nothing
        listens, and each port is tried until it first answers, then no more. (Reading
        /proc/net/tcp instead would walk the kernel's whole TCP table, every namespace's,
        on every look: far dearer on a busy host.)"""
        pending = {key: port for key, port in self.spec["relays"].items()}
        deadline = time.monotonic() + timeout
        while True:
            for key, port in list(pending.items()):
                if accepts(port):
                    del pending[key]
            exited = {p: c.returncode for p, c in self.children.items() if c.poll() is not None}
            if not pending:
                return {"ready": True}
            if exited or time.monotonic() > deadline:
                return {"ready": False, "waiting": sorted(pending), "exited": exited}
            await asyncio.sleep(0.01)

    async def _relay(self, port: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().split()
        try:
            if line[:1] == ["restart"] and len(line) == 2:
                await asyncio.get_running_loop().run_in_executor(None, self.restart, line[1])
                answer = {"ok": True}
            elif line == ["parts"]:
                answer = {p: c.poll() is None for p, c in self.children.items()}
            elif line == ["states"]:
                answer = self.states()
            elif line == ["listening"]:
                answer = {"ports": sorted(listening())}
            elif line[:1] == ["kill"] and len(line) == 2:
                await asyncio.get_running_loop().run_in_executor(None, self.kill, line[1])
                answer = {"ok": True}
            elif line[:1] == ["ready"] and len(line) == 2:
                answer = await self.ready(float(line[1]))
            else:
                answer = {"error": f"unknown command {' '.join(line)!r} "
                                   "(restart PART | kill PART | parts | states | listening | ready SECONDS)"}
        except ValueError as exc:
            answer = {"error": str(exc)}
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.close()

    async def run(self) -> None:
        os.umask(0)  # the sockets: the site (another user) connects to them
        self.start_all()
        servers = []
        # The control socket first: the site waits for it to ask whether the parts are ready.
        control = self.sock_dir / "control.sock"
        control.unlink(missing_ok=True)
        servers.append(await asyncio.start_unix_server(self._control, path=str(control)))
        for key, port in self.spec["relays"].items():
            path = self.sock_dir / f"{key}.sock"
            path.unlink(missing_ok=True)
            servers.append(await asyncio.start_unix_server(
                lambda r, w, port=port: self._relay(port, r, w), path=str(path)))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for server in servers:
            server.close()
        for proc in self.children.values():
            self._stop(proc)


def listening() -> set[int]:
    """The TCP ports something listens on in this namespace, read from the kernel's table
    without connecting: a connection to a learner's listener would be traffic their proxy
    records (and a graded run would take it for its own)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == LISTEN:
                    ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _running(pid: int) -> bool:
    """The process runs (a zombie, dead but not reaped yet by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):  # the other side may be gone already: fine
            writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="container_inside.py")
    parser.add_argument("--spec", required=True)
    opts = parser.parse_args(argv)
    spec_path = Path(opts.spec)
    asyncio.run(Serve(json.loads(spec_path.read_text()), spec_path.parent).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
