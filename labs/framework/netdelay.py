"""A TCP relay that adds one-way latency: the network between the proxy and a backend.

    python -m labs.framework.netdelay --listen 127.0.0.1:9001 --target 127.0.0.1:9101 \\
        --delay-ms 30

On one machine a packet crosses loopback in microseconds, so races that depend on the
network's delay (the keep-alive race: a request and the backend's FIN crossing on the
wire) have a window too small to see. This relay delivers every chunk of data, and the
end of each direction (FIN), ``delay`` later, in order, like a link with that one-way
latency (what ``tc netem delay`` does, without root and for these ports only). A reset
from either side is passed on as a reset (SO_LINGER 0) after the same delay.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct


class Pipe:
    """One direction: bytes read from ``src`` reach ``dst`` ``delay`` seconds later."""

    def __init__(self, loop, delay: float, dst_writer: asyncio.StreamWriter):
        self.loop, self.delay, self.dst = loop, delay, dst_writer

    def later(self, fn) -> None:
        self.loop.call_later(self.delay, fn)

    async def run(self, src: asyncio.StreamReader, src_writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    self.later(self._eof)
                    return
                self.later(lambda d=data: self._send(d))
        except (ConnectionResetError, BrokenPipeError):
            self.later(self._reset)
        except OSError:
            self.later(self._reset)

    def _send(self, data: bytes) -> None:
        if not self.dst.is_closing():
            self.dst.write(data)

    def _eof(self) -> None:
        if not self.dst.is_closing():
            try:
                self.dst.write_eof()
            except OSError:
                pass

    def _reset(self) -> None:
        sock = self.dst.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.dst.transport.abort()


async def handle(reader, writer, target: tuple[str, int], delay: float) -> None:
    loop = asyncio.get_running_loop()
    try:
        up_reader, up_writer = await asyncio.open_connection(*target)
    except OSError:
        writer.transport.abort()
        return
    down = Pipe(loop, delay, up_writer)  # client -> backend
    up = Pipe(loop, delay, writer)  # backend -> client
    await asyncio.gather(down.run(reader, writer), up.run(up_reader, up_writer))
    await asyncio.sleep(delay + 0.05)
    for w in (writer, up_writer):
        if not w.is_closing():
            w.close()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main(listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, target, delay), *listen,
                                        reuse_address=True)
    print(f"netdelay {listen[0]}:{listen[1]} -> {target[0]}:{target[1]} "
          f"(+{delay * 1000:g} ms each way)", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--delay-ms", type=float, default=20.0)
    a = p.parse_args()
    asyncio.run(main(_addr(a.listen), _addr(a.target), a.delay_ms / 1000.0))
