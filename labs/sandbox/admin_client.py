"""Small HTTP clients for the proxy's admin API and a toy backend's control API.

Sync (`AdminClient`, `BackendControl`: urllib, for views and the command) and
async (`AsyncAdminClient`: aiohttp, for consumers and the bridge), both with
timeouts. Every failure becomes one of two exceptions whose message a learner
can act on:

* `Unreachable`: nothing answered (refused, timed out, reset): the part is
  down or the URL is wrong. The message names the URL and what happened.
* `Refused`: the part answered with an error. `errors` carries the proxy's
  own [{"path", "message"}] (422 config refused, 404 unknown backend...), so
  the page can show each path with its message.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import socket
import urllib.error
import urllib.parse
import sys
import urllib.request
from typing import TYPE_CHECKING, AsyncIterator

from labs.problems import Problem

if TYPE_CHECKING:
    import aiohttp

DEFAULT_TIMEOUT = 3.0


class AdminError(Problem):
    """A call to the admin API or a toy backend failed; `errors` is [{"path", "message"}].

    ``status`` is what the far end answered (None: nothing answered)."""

    status: int | None = None

    def __init__(self, message: str, errors: list[dict] | None = None,
                 status: int | None = None):
        super().__init__(message, errors)
        self.status = status


class Unreachable(AdminError):
    """Nothing answered at the URL."""


class Refused(AdminError):
    """The part answered with an error status."""


def _why(exc: BaseException) -> str:
    """A short human reason for a network failure."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, (socket.timeout, TimeoutError, asyncio.TimeoutError)):
        return "no answer in time"
    # aiohttp is imported by the async client only (it costs the sync callers, a graded
    # run's command among them, a seventh of a second): without it, no error of its kind.
    aio = sys.modules.get("aiohttp")
    if isinstance(exc, (ConnectionResetError, http.client.RemoteDisconnected)) or (
            aio and isinstance(exc, aio.ServerDisconnectedError)):
        return "the connection was closed without an answer"
    if aio and isinstance(exc, aio.ClientConnectorError):
        inner = exc.os_error
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused (nothing listens there)"
        return str(inner) or type(inner).__name__
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc})"
    text = str(exc) or type(exc).__name__
    return text


def refused_from(status: int, body: bytes, what: str) -> Refused:
    """Turn an error answer into Refused, keeping the part's own error list."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    if isinstance(data, dict) and ("error" in data or "errors" in data):
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            errors = [{"path": str(e.get("path", "")), "message": str(e.get("message", e))}
                      if isinstance(e, dict) else {"path": "", "message": str(e)}
                      for e in errors]
        else:
            errors = None
        message = str(data.get("error") or (errors[0]["message"] if errors else "refused"))
        return Refused(message, errors, status)
    text = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {status}"
    return Refused(f"{what} answered {status}: {text}", None, status)


# The peer closed without (all of) an answer: expected from a process told to exit.
_CLOSED = (ConnectionResetError, http.client.RemoteDisconnected, http.client.IncompleteRead)


class _SyncHttp:
    what = "the service"

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT,
                 token: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token

    def call(self, method: str, path: str, body: object = None,
             query: dict | None = None, ok_if_closed: bool = False) -> object:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise refused_from(exc.code, exc.read(), f"{self.what} at {self.base_url}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if ok_if_closed and isinstance(cause, _CLOSED):
                return None
            raise Unreachable(f"{self.what} at {self.base_url} does not answer: {_why(exc)}"
                              ) from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")


class AdminClient(_SyncHttp):
    """The proxy's admin API, synchronously (views, management commands)."""

    what = "the proxy's admin API"

    def state(self) -> dict:
        return self.call("GET", "/state")

    def config(self) -> dict:
        return self.call("GET", "/config", query={"format": "json"})

    def put_config(self, data: dict) -> dict:
        return self.call("PUT", "/config", body=data)

    def request(self, request_id: str) -> dict:
        return self.call("GET", f"/requests/{urllib.parse.quote(request_id, safe='')}")

    def recent_requests(self, limit: int = 100) -> list[dict]:
        return (self.call("GET", "/requests", query={"limit": limit}) or {}).get("requests", [])

    def connections(self) -> dict:
        """Live L4 connections and WebSocket tunnels: {"count", "connections": [...]}."""
        return self.call("GET", "/connections")

    def add_backend(self, pool: str, name: str, address: str, weight: int = 1) -> dict:
        return self.call("POST", f"/pools/{_q(pool)}/backends",
                         body={"name": name, "address": address, "weight": weight})

    def remove_backend(self, pool: str, name: str, drain: bool = False) -> dict:
        return self.call("DELETE", f"/pools/{_q(pool)}/backends/{_q(name)}",
                         query={"drain": "1"} if drain else None)

    def set_weight(self, pool: str, name: str, weight: int) -> dict:
        return self.call("PUT", f"/pools/{_q(pool)}/backends/{_q(name)}/weight",
                         body={"weight": weight})

    def set_intent(self, pool: str, name: str, verb: str) -> dict:
        if verb not in ("drain", "maintenance", "activate"):
            raise ValueError(f"unknown backend verb {verb!r}")
        return self.call("POST", f"/pools/{_q(pool)}/backends/{_q(name)}/{verb}")

    def set_balancer(self, pool: str, balancer: dict) -> dict:
        return self.call("PUT", f"/pools/{_q(pool)}/balancer", body=balancer)

    def patch_pool(self, pool: str, settings: dict) -> dict:
        return self.call("PATCH", f"/pools/{_q(pool)}", body=settings)


class BackendControl(_SyncHttp):
    """A toy backend's /_control API."""

    what = "the toy backend"

    def stats(self) -> dict:
        return self.call("GET", "/_control")

    def faults(self) -> dict:
        return self.call("GET", "/_control/faults")

    def set_faults(self, patch: dict) -> dict:
        return self.call("PUT", "/_control/faults", body=patch)

    def clear_faults(self) -> dict:
        return self.call("DELETE", "/_control/faults")

    def crash(self) -> None:
        # The process exits at once; the answer may never come.
        self.call("POST", "/_control/crash", ok_if_closed=True)


def _import_aiohttp() -> None:
    """Bind aiohttp in this module's globals the first time an async client is made."""
    global aiohttp
    import aiohttp


def _q(part: str) -> str:
    return urllib.parse.quote(str(part), safe="")


class AsyncAdminClient:
    """The admin API from asyncio code (consumers, the bridge)."""

    what = "the proxy's admin API"

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT,
                 token: str | None = None):
        _import_aiohttp()
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    async def get_json(self, path: str, query: dict | None = None,
                       session: aiohttp.ClientSession | None = None) -> object:
        own = session is None
        session = session or aiohttp.ClientSession()
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with session.get(self.base_url + path, params=query, headers=self.headers,
                                   timeout=timeout) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise refused_from(resp.status, raw, f"{self.what} at {self.base_url}")
                return json.loads(raw) if raw.strip() else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Unreachable(f"{self.what} at {self.base_url} does not answer: {_why(exc)}"
                              ) from None
        finally:
            if own:
                await session.close()

    async def state(self, session: aiohttp.ClientSession | None = None) -> dict:
        return await self.get_json("/state", session=session)

    async def recent_requests(self, limit: int = 100,
                              session: aiohttp.ClientSession | None = None) -> list[dict]:
        data = await self.get_json("/requests", {"limit": str(limit)}, session=session)
        return (data or {}).get("requests", [])

    async def request(self, request_id: str) -> dict:
        return await self.get_json(f"/requests/{_q(request_id)}")

    async def connections(self, session: aiohttp.ClientSession | None = None) -> dict:
        """Live L4 connections and WebSocket tunnels: {"count", "connections": [...]}."""
        return await self.get_json("/connections", session=session)

    async def replay(self, types: list[str] | None = None, count: int = 500,
                     idle: float = 0.15, deadline: float = 1.5,
                     session: aiohttp.ClientSession | None = None) -> list[dict]:
        """Past events from GET /events?replay=N, read until the stream goes quiet.

        The proxy writes the replayed lines at once, then keeps the stream open
        for live ones: we stop after `idle` seconds without a line (or at
        `deadline`), so callers get the recent past without waiting forever.
        """
        query = {"replay": str(count)}
        if types:
            query["types"] = ",".join(types)
        own = session is None
        session = session or aiohttp.ClientSession()
        events: list[dict] = []
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
            async with session.get(self.base_url + "/events", params=query,
                                   headers=self.headers, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise refused_from(resp.status, await resp.read(),
                                       f"{self.what} at {self.base_url}")
                loop = asyncio.get_running_loop()
                end = loop.time() + deadline
                splitter = LineSplitter()
                while True:
                    left = min(idle, end - loop.time())
                    if left <= 0:
                        break
                    try:
                        chunk = await asyncio.wait_for(resp.content.readany(), left)
                    except asyncio.TimeoutError:
                        break
                    if not chunk:
                        break
                    events.extend(splitter.feed(chunk))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Unreachable(f"{self.what} at {self.base_url} does not answer: {_why(exc)}"
                              ) from None
        finally:
            if own:
                await session.close()
        return events

    async def stream(self, session: aiohttp.ClientSession, types: list[str] | None = None,
                     replay: int = 0, on_open=None) -> AsyncIterator[dict]:
        """Live events from GET /events, one dict per line, until the proxy closes it.

        `on_open()` is called once the proxy has accepted the subscription (from then on
        no event is missed).
        """
        query = {"replay": str(replay)}
        if types:
            query["types"] = ",".join(types)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=None)
        try:
            async with session.get(self.base_url + "/events", params=query,
                                   headers=self.headers, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise refused_from(resp.status, await resp.read(),
                                       f"{self.what} at {self.base_url}")
                if on_open is not None:
                    on_open()
                splitter = LineSplitter()
                async for chunk in resp.content.iter_any():
                    for event in splitter.feed(chunk):
                        yield event
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Unreachable(f"the event stream at {self.base_url}/events broke: {_why(exc)}"
                              ) from None


class LineSplitter:
    """NDJSON bytes in arbitrary chunks -> dicts; bad lines become warning events."""

    def __init__(self, max_line: int = 4 * 1024 * 1024):
        self._buffer = b""
        self.max_line = max_line

    def feed(self, chunk: bytes) -> list[dict]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > self.max_line:
            self._buffer = b""
            lines.append(b'{"type":"warning","source":"bridge",'
                         b'"message":"an event line was too long and was skipped"}')
        out = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"type": "warning", "source": "bridge",
                         "message": f"unreadable event line: {line[:120]!r}"}
            if isinstance(event, dict):
                out.append(event)
        return out
