"""gRPC clients: each keeps one channel (one HTTP/2 connection) and calls over it.

    locust -f labs/catalog/grpc-l4-pinning/traffic.py --headless -u 2 -t 6s --host URL

Each locust user is one client pod of the order service with its one gRPC channel to
the inventory service (labs/traffic/grpc_client.py: h2 on a socket, no grpcio). It calls
lblab.toy.Echo/Whoami back to back (LBLAB_THINK_S between calls, default 10 ms); the reply
names the backend that answered, and each call is counted under that name
("Whoami ← b2"), so the clients' own numbers say where the calls went. A failed call is
counted as "Whoami" with its error, and the channel reconnects on the next call.
"""
from urllib.parse import urlsplit

from locust import User, between, events, task

from lblab_common import env_float, next_source_address, target_is_loopback
from labs.traffic.grpc_client import WHOAMI, Channel, GrpcError, whoami_request

THINK_S = env_float("LBLAB_THINK_S", 0.01)


class OrderServicePod(User):
    wait_time = between(THINK_S * 0.5, THINK_S * 1.5)

    def on_start(self):
        url = urlsplit(self.host)
        source = next_source_address() if target_is_loopback(self.host) else None
        self.channel = Channel(url.hostname, url.port or 80, source=source, timeout=3.0)

    def on_stop(self):
        self.channel.close()

    @task
    def whoami(self):
        import time

        started = time.perf_counter()
        name, error, size = "Whoami", None, 0
        try:
            reply = self.channel.unary(WHOAMI, whoami_request("order-42"))
            name = f"Whoami ← {reply.backend()}"
            size = sum(len(m) for m in reply.messages)
        except GrpcError as exc:
            error = exc
        events.request.fire(request_type="grpc", name=name,
                            response_time=(time.perf_counter() - started) * 1000,
                            response_length=size, exception=error, context={})
