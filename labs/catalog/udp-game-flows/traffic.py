"""Game clients over UDP: bursts of play, then a quiet heartbeat gap.

    locust -f labs/catalog/udp-game-flows/traffic.py --headless -u 12 -t 6s --host udp://HOST:PORT

Each locust user is one player with one UDP socket (one source address and port: one
flow at the balancer). It sends a burst of LBLAB_BURST (default 5) game datagrams 50 ms
apart, then stays quiet for LBLAB_GAP_S (default 1.5 s in the lab: a 15 s heartbeat in
production at 1:10, like a client idling in a menu). Every reply names the server that
holds the player's game ("b2 player-7 12"). A reply from another server than the one
before means the game state was lost: counted as a failure "session moved from b2 to
b4". A datagram with no reply within 0.5 s is counted as lost.
"""
import socket
import time
from urllib.parse import urlsplit

from locust import User, constant, events, task

from lblab_common import env_float, env_int, next_source_address, target_is_loopback

GAP_S = env_float("LBLAB_GAP_S", 1.5)
BURST = env_int("LBLAB_BURST", 5)


class SessionMoved(Exception):
    pass


class DatagramLost(Exception):
    pass


class Player(User):
    wait_time = constant(GAP_S)
    _count = 0

    def on_start(self):
        Player._count += 1
        self.name = f"player-{Player._count}"
        url = urlsplit(self.host)
        self.target = (url.hostname, url.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        source = next_source_address() if target_is_loopback(self.host) else "0.0.0.0"
        self.sock.bind((source, 0))
        self.sock.settimeout(0.5)
        self.server = None
        self.seq = 0

    def on_stop(self):
        self.sock.close()

    def _one(self):
        self.seq += 1
        payload = f"{self.name} {self.seq}".encode()
        started = time.perf_counter()
        error, server = None, None
        self.sock.sendto(payload, self.target)
        try:
            while True:
                data = self.sock.recv(2048)
                if data.endswith(b" " + payload):  # not a late reply to an earlier one
                    server = data.split(b" ", 1)[0].decode()
                    break
        except socket.timeout:
            error = DatagramLost("no reply within 0.5 s")
        if server and self.server and server != self.server:
            error = SessionMoved(f"session moved from {self.server} to {server}: game lost")
        if server:
            self.server = server
        events.request.fire(request_type="udp", name="game datagram",
                            response_time=(time.perf_counter() - started) * 1000,
                            response_length=len(payload), exception=error, context={})

    @task
    def play(self):
        for i in range(BURST):
            self._one()
            if i < BURST - 1:
                time.sleep(0.05)
