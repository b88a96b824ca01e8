"""``--mode tcp``: a line-based "game session" server that remembers who is connected.

Theory of operation
-------------------
An L4 balancer forwards bytes, not requests, so an L4 lab needs a backend whose state lives
in the *connection*: here a player exists exactly as long as its TCP connection does. That
makes connection-level behaviour visible: which backend a connection landed on, that a
player stays on it for the whole session, that it is gone when the backend dies or the
balancer cuts the connection, and (with ``--proxy-protocol``) which client address the
backend learned.

The protocol, one command per line (LF or CRLF; answers end in CRLF)::

    <- HELLO from b1                          on connect
    -> JOIN alice      <- WELCOME alice on b1, players here: 2
    -> WHO             <- PLAYERS 2 on b1: alice, bob      (join order; "PLAYERS 0 on b1")
    -> PING            <- PONG b1
    -> ECHO some text  <- some text
    -> WHOAMI          <- one JSON line: backend, player, client (from the PROXY header
                          if any), peer (the socket peer), connection_id, commands, tls,
                          proxy_protocol (null when off)
    -> HELP            <- COMMANDS JOIN <player>, WHO, WHOAMI, PING, ECHO <text>, QUIT
    -> QUIT            <- BYE from b1                     then the backend closes
    anything else      <- ERR <what is wrong and what to send>

A disconnect (QUIT, the client leaving, a reset) removes the player. Player names are 1-32
letters, digits or ``._@-``, unique per backend. Lines longer than 1024 bytes are refused
(``ERR``) and the connection closed.

Faults: every line the backend writes (the greeting included) first asks the same
``FaultState.decide_app`` as an HTTP request, so the knobs mean the same thing: warm-up ->
``ERR warming up, retry in N s``; reset -> TCP RST instead of the line; hang -> no line now
or ever, input ignored, the socket open until the client leaves; latency_ms/jitter_ms ->
the line is late; cpu_ms -> the process burns CPU; dependency_down -> ``ERR dependency
down``; error_rate -> ``ERR injected error``; crash_mid_response -> half the line, then the
connection closes. A command replaced by an ``ERR`` is not executed. With no fault set, no
decision is made at all.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import socket
import struct
import time
from typing import Any

from .app import BackendApp, burn_cpu

MAX_LINE = 1024
PLAYER_RE = re.compile(r"[A-Za-z0-9._@-]{1,32}")
COMMANDS = "JOIN <player>, WHO, WHOAMI, PING, ECHO <text>, QUIT"

_ids = itertools.count(1)


class _Hung(Exception):
    """The hang fault fired: stop answering."""


class _Gone(Exception):
    """The connection was reset or closed by a fault."""


class Session:
    __slots__ = ("id", "peer", "client", "player", "connected", "commands", "header", "tls",
                 "writer")

    def __init__(self, writer: asyncio.StreamWriter, header, tls: dict | None):
        self.id = next(_ids)
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = _fmt(peer)
        self.header = header
        self.client = self.peer
        if header is not None and header.source is not None:
            from .proxy_protocol import format_address
            self.client = format_address(header.source)
        self.player: str | None = None
        self.connected = time.monotonic()
        self.commands = 0
        self.tls = tls


def _fmt(peer) -> str:
    if isinstance(peer, tuple):
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer)


class GameServer:
    def __init__(self, app: BackendApp, tls: bool = False):
        self.app = app
        self.name = app.name
        self.tls = tls   # compute the TLS facts once per connection (for WHOAMI)
        self.port = 0
        self.sessions: dict[int, Session] = {}
        self.players: dict[str, Session] = {}   # insertion order = join order
        self.commands_total = 0

    # -- wiring --------------------------------------------------------------------------

    def protocol(self, header=None) -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=MAX_LINE + 2)
        return asyncio.StreamReaderProtocol(
            reader, lambda r, w: self._session(r, w, header))

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "players": [
                {"player": s.player, "connection_id": s.id, "client": s.client, "peer": s.peer,
                 "connected_s": round(now - s.connected, 3), "commands": s.commands}
                for s in self.players.values()
            ],
            "tcp": {
                "port": self.port,
                "commands_total": self.commands_total,
                "guests": sum(1 for s in self.sessions.values() if s.player is None),
            },
        }

    # -- one connection ------------------------------------------------------------------

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       header) -> None:
        tls = None
        if self.tls:
            from .tls import connection_info
            tls = connection_info(writer.get_extra_info("ssl_object"))
        s = Session(writer, header, tls)
        self.sessions[s.id] = s
        self.app.stats.connections_total += 1
        self.app.connections_open += 1
        try:
            await self._say(s, f"HELLO from {self.name}")
            while True:
                try:
                    raw = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    raw = exc.partial   # EOF: a last line without LF still counts
                    if not raw.strip():
                        return
                except asyncio.LimitOverrunError:
                    writer.write(f"ERR line longer than {MAX_LINE} bytes; closing\r\n".encode())
                    return
                line = raw.decode("utf-8", "replace").strip("\r\n")
                if not line.strip():
                    continue
                s.commands += 1
                self.commands_total += 1
                if not await self._command(s, line):
                    return
        except _Hung:
            await self._hang(reader)
        except (_Gone, OSError):
            return   # reset by a fault, or the client went (ssl.SSLError is an OSError too)
        finally:
            self._leave(s)
            if not writer.is_closing():
                writer.close()

    def _leave(self, s: Session) -> None:
        self.sessions.pop(s.id, None)
        self.app.connections_open -= 1
        if s.player is not None and self.players.get(s.player) is s:
            del self.players[s.player]

    async def _command(self, s: Session, line: str) -> bool:
        """Answer one line; False when the connection should close."""
        verb, _, rest = line.strip().partition(" ")
        verb = verb.upper()
        rest = rest.strip()
        if verb == "QUIT":
            if await self._say(s, f"BYE from {self.name}"):
                await s.writer.drain()
                return False
            return True   # a fault answered ERR instead: QUIT was not executed
        if verb == "JOIN":
            await self._say(s, lambda: self._join(s, rest))
        elif verb == "WHO":
            await self._say(s, self._who)
        elif verb == "PING":
            await self._say(s, f"PONG {self.name}")
        elif verb == "ECHO":
            text = line.lstrip()[4:]
            await self._say(s, text[1:] if text.startswith(" ") else text)
        elif verb == "WHOAMI":
            await self._say(s, lambda: json.dumps(self._whoami(s)))
        elif verb == "HELP":
            await self._say(s, f"COMMANDS {COMMANDS}")
        else:
            await self._say(s, f"ERR unknown command {verb[:40]!r}; commands: {COMMANDS}")
        return True

    def _join(self, s: Session, name: str) -> str:
        if not name:
            return "ERR usage: JOIN <player>"
        if not PLAYER_RE.fullmatch(name):
            return (f"ERR bad player name {name[:40]!r}: use 1-32 letters, digits or ._@- "
                    "(no spaces)")
        holder = self.players.get(name)
        if holder is not None and holder is not s:
            return (f"ERR player {name} is already connected to {self.name} "
                    f"(connection {holder.id}); pick another name")
        if s.player is not None and s.player != name:
            del self.players[s.player]   # renaming: the old name is free again
        if holder is None:
            self.players[name] = s
        s.player = name
        return f"WELCOME {name} on {self.name}, players here: {len(self.players)}"

    def _who(self) -> str:
        if not self.players:
            return f"PLAYERS 0 on {self.name}"
        return f"PLAYERS {len(self.players)} on {self.name}: {', '.join(self.players)}"

    def _whoami(self, s: Session) -> dict[str, Any]:
        return {
            "backend": self.name, "player": s.player, "client": s.client, "peer": s.peer,
            "connection_id": s.id, "commands": s.commands, "tls": s.tls,
            "proxy_protocol": s.header.describe() if s.header is not None else None,
        }

    # -- writing, with faults ------------------------------------------------------------

    async def _say(self, s: Session, line) -> bool:
        """Write ``line`` (a str, or a callable making it: the command's effect).

        A fault may replace it with an ``ERR`` line (the callable is then not run: the
        command is not executed) and returns False; True when the real line went out.
        Raises _Gone / _Hung when a fault closes the connection or hangs it.
        """
        app = self.app
        now = app.clock()
        crash = False
        if not app.faults.app_quiet(now):
            error, crash = await self._apply_faults(s, now)
            if error is not None:
                s.writer.write(error.encode() + b"\r\n")
                return False
        text = line() if callable(line) else line
        data = text.encode("utf-8") + b"\r\n"
        if crash:
            app.stats.injected["crash_mid_response"] += 1
            s.writer.write(data[: len(data) // 2])
            s.writer.close()
            raise _Gone
        s.writer.write(data)
        if s.writer.transport.get_write_buffer_size() > 64 * 1024:
            await s.writer.drain()   # a client that never reads does not grow our memory
        return True

    async def _apply_faults(self, s: Session, now: float) -> tuple[str | None, bool]:
        """Apply the fault decision for one line: (an ERR line to send instead, crash)."""
        app = self.app
        d = app.faults.decide_app(now, app.rng)
        injected = app.stats.injected
        if d.warming_up:
            injected["warming_up"] += 1
            return f"ERR warming up, retry in {max(1, math.ceil(d.warming_up))} s", False
        if d.reset:
            injected["reset"] += 1
            transport = s.writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            raise _Gone
        if d.hang:
            injected["hang"] += 1
            raise _Hung
        if d.delay_s:
            await app.sleep(d.delay_s)
        if d.cpu_ms:
            burn_cpu(d.cpu_ms)
        if d.dependency_down:
            injected["dependency_down"] += 1
            return "ERR dependency down", False
        if d.error_status is not None:
            injected["error"] += 1
            return "ERR injected error", False
        return None, d.crash

    async def _hang(self, reader: asyncio.StreamReader) -> None:
        """Never answer again; read and drop input until the client leaves."""
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass  # the client left abruptly: the hang is over either way
