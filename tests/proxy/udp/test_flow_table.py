"""FlowTable (proxy/io/udp.py) without sockets."""
from proxy.io.udp import FlowTable


class Flow:
    def __init__(self, last_seen):
        self.last_seen = last_seen


def test_limit_and_idle():
    table = FlowTable(max_flows=2, idle=30.0)
    a, b = Flow(0.0), Flow(20.0)
    table.add(("10.0.0.1", 5000), a)
    assert not table.full()
    table.add(("10.0.0.1", 5001), b)  # same address, other port: another flow
    assert table.full() and len(table) == 2
    assert table.idle_flows(29.9) == []
    assert table.idle_flows(30.0) == [a]
    assert table.idle_flows(50.0) == [a, b]
    table.remove(("10.0.0.1", 5000), a)
    assert not table.full() and table.get(("10.0.0.1", 5000)) is None


def test_remove_only_the_same_flow():
    table = FlowTable(max_flows=10, idle=1.0)
    old, new = Flow(0.0), Flow(1.0)
    table.add(("c", 1), old)
    table.add(("c", 1), new)  # the client came back after its old flow ended
    table.remove(("c", 1), old)
    assert table.get(("c", 1)) is new
