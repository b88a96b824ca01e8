"""proxy.io.writes: a pass's writes are queued and sent together right after it."""
import asyncio
import socket

from proxy.io.writes import DIRECT_BYTES, BatchedWrites, write_batch


class Conn(BatchedWrites, asyncio.Protocol):
    def __init__(self, loop):
        self.transport = None
        self.out = None
        self.batch = write_batch(loop)
        self.write_closed = False

    def connection_made(self, transport):
        self.transport = transport


class Broken(Conn):
    def send_pending(self):
        self.out = None
        raise RuntimeError("transport gone")


async def _pair(loop, factory=Conn):
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    conn = factory(loop)
    await loop.connect_accepted_socket(lambda: conn, ours)
    return conn, theirs


def _recv(sock) -> bytes:
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""


def test_writes_wait_for_the_end_of_the_pass_then_go_in_order():
    async def main():
        loop = asyncio.get_running_loop()
        conn, peer = await _pair(loop)
        conn.write(b"HTTP/1.1 200 OK\r\n")
        conn.write(b"content-length: 2\r\n\r\n")
        conn.write(b"ok")
        assert _recv(peer) == b""  # nothing sent during the pass
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert _recv(peer) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        conn.transport.close()
        peer.close()
    asyncio.run(main())


def test_every_connection_of_the_pass_is_flushed_even_after_one_fails():
    async def main():
        loop = asyncio.get_running_loop()
        broken, _ = await _pair(loop, Broken)
        a, pa = await _pair(loop)
        b, pb = await _pair(loop)
        a.write(b"a1")
        broken.write(b"x")
        b.write(b"b1")
        a.write(b"a2")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert (_recv(pa), _recv(pb)) == (b"a1a2", b"b1")
        b.write(b"b2")  # the batch goes on working after the failure
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert _recv(pb) == b"b2"
    asyncio.run(main())


def test_sent_before_a_close_dropped_after_write_closed():
    async def main():
        loop = asyncio.get_running_loop()
        conn, peer = await _pair(loop)
        conn.write(b"last words")
        conn.send_pending()  # what a closing connection does first
        conn.transport.close()
        await asyncio.sleep(0.01)
        assert _recv(peer) == b"last words"

        conn, peer = await _pair(loop)
        conn.write(b"never")
        conn.write_closed = True  # aborted or lost meanwhile
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert _recv(peer) == b""
        conn.write(b"after")  # refused once closed
        assert conn.out is None
    asyncio.run(main())


def test_a_large_write_goes_at_once_after_what_is_queued():
    async def main():
        loop = asyncio.get_running_loop()
        conn, peer = await _pair(loop)
        big = b"x" * DIRECT_BYTES
        conn.write(b"head;")
        conn.write(big)  # sent now, the queued head first: no pass of the loop needed
        assert _recv(peer) == b"head;" + big
        conn.write(b"tail")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert _recv(peer) == b"tail"
    asyncio.run(main())
