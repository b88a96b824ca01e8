"""Writes of one pass of the event loop, sent together at its end.

Under load one pass of the loop (one `epoll_wait`) serves dozens of
connections: uvloop calls `data_received` for each socket that is ready, and
each call may write a request to a backend or a response to a client. Sent
one by one as they are made, nearly every write wakes its peer (the client,
a backend) that went back to sleep since the previous one; on a virtual
machine waking another CPU is an inter-processor interrupt through the
hypervisor, and it cost more than the write itself. Measured on this
project's benchmark (bench/l7.py, the proxy on one core, wrk and the origins
on the other): 41 % of the proxy's CPU was kernel time, most of it in those
wake-ups; with writes sent at the end of the pass, 28 %, and 17 % more
requests per CPU-second.

So a connection's `write` only queues its bytes, and the first write of a
pass asks the loop to call `WriteBatch.flush` next (`call_soon`: the loop
runs it before it waits for I/O again, so no write waits for the network).
The flush sends each connection's bytes in one call: a response head and its
body, or several pipelined responses, become one system call. The first
write of the flush wakes the peer; the rest find it awake.

A connection that mixes queued writes with direct transport calls must send
what is queued first (`send_pending` before `close`/`write_eof`); one that is
aborted or lost drops it, as the transport would have dropped its buffer.
HTTP/1 clients and backend connections (proxy/io/l7.py, upstream.py) write
this way; HTTP/2 connections gather their frames the same way on their own
(proxy/http2/server.py).

Not everything is worth queueing. A write of DIRECT_BYTES or more goes at once
(after what is queued): it wakes its peer for a lot of data anyway, and the
copy overlaps the peer's reading only if it starts now (queued, a 256 KiB
response was relayed at about 3.2k req/CPU-s against 5.2k sent at once). The
L4 relay writes at once too: queued, its keep-alive small messages lost 12 %
and its 256 KiB transfers 64 % per CPU-second (bench/l4.py --baseline), as
each byte read waited for the pass to end before it moved on.
"""
from __future__ import annotations

import asyncio
import logging
import weakref

log = logging.getLogger("proxy.io")

# A write this large is sent at once (after what is queued): see BatchedWrites.write.
DIRECT_BYTES = 8192


class WriteBatch:
    """The connections with bytes queued in this pass of one loop."""

    __slots__ = ("_loop", "_dirty")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        # Weakly: the batch is the value of a weak-keyed dict, keyed by the loop.
        self._loop = weakref.ref(loop)
        self._dirty: list[BatchedWrites] = []

    def add(self, conn: "BatchedWrites") -> None:
        if not self._dirty:
            self._loop().call_soon(self.flush)
        self._dirty.append(conn)

    def flush(self) -> None:
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
            try:
                conn.send_pending()
            except Exception:  # one broken transport must not keep the others' bytes
                log.exception("sending queued bytes on %r", conn)


class BatchedWrites:
    """For a protocol: `write` queues on the loop's batch. Needs the attributes
    `transport`, `out` (None), `batch` (write_batch(loop)) and `write_closed`."""

    __slots__ = ()

    transport: asyncio.WriteTransport
    out: list[bytes] | None
    batch: WriteBatch
    write_closed: bool

    def write(self, data: bytes) -> None:
        if self.write_closed:
            return
        out = self.out
        if out is None:
            self.out = [data]
            self.batch.add(self)
        else:
            out.append(data)
        if len(data) >= DIRECT_BYTES:
            # A large write wakes its peer for a lot of data anyway; what it costs is the
            # copy, which overlaps the peer's reading if it starts now (with what is
            # queued before it, in one call; the batch then finds nothing to send).
            self.send_pending()

    def send_pending(self) -> None:
        """Send what is queued now (the batch's flush, or before closing)."""
        out = self.out
        if out is None:
            return
        self.out = None
        if self.write_closed:
            return
        try:
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)
        except RuntimeError:  # closed under us: its connection_lost is on its way
            pass


# One batch per event loop (loops are weakly held: tests make many).
_BATCHES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteBatch]" = \
    weakref.WeakKeyDictionary()


def write_batch(loop: asyncio.AbstractEventLoop) -> WriteBatch:
    """The loop's WriteBatch."""
    batch = _BATCHES.get(loop)
    if batch is None:
        batch = _BATCHES[loop] = WriteBatch(loop)
    return batch
