"""The admin and toy-backend clients against real processes (and a port where none listens)."""
import aiohttp
import pytest

from labs.sandbox.admin_client import (
    AdminClient,
    AsyncAdminClient,
    BackendControl,
    LineSplitter,
    Refused,
    Unreachable,
)


def test_unreachable_says_where_and_why(dead_admin_url):
    with pytest.raises(Unreachable) as info:
        AdminClient(dead_admin_url, timeout=1).state()
    message = info.value.message
    assert dead_admin_url in message and "connection refused" in message
    assert info.value.errors == [{"path": "", "message": message}]


@pytest.mark.asyncio
async def test_async_unreachable(dead_admin_url):
    with pytest.raises(Unreachable) as info:
        await AsyncAdminClient(dead_admin_url, timeout=1).state()
    assert "connection refused" in info.value.message


def test_state_and_a_refused_change_keep_the_proxy_words(lab):
    client = AdminClient(lab.admin_url)
    state = client.state()
    assert [b["name"] for b in state["pools"]["web"]["backends"]] == ["b1", "b2"]
    with pytest.raises(Refused) as info:
        client.set_weight("web", "b1", 5000)
    assert info.value.status == 422
    paths = [e["path"] for e in info.value.errors]
    assert "pools.web.backends[0].weight" in paths
    with pytest.raises(Refused) as info:
        client.set_weight("nope", "b1", 2)
    assert info.value.status == 404 and "no pool named 'nope'" in info.value.message


@pytest.mark.asyncio
async def test_recent_requests_and_replay(lab):
    import urllib.request

    for _ in range(3):
        urllib.request.urlopen(f"{lab.proxy_url}/hello", timeout=2).read()
    client = AsyncAdminClient(lab.admin_url)
    async with aiohttp.ClientSession() as session:
        requests = await client.recent_requests(10, session=session)
        assert len(requests) == 3 and requests[-1]["path"] == "/hello"
        past = await client.replay(types=["state_change"], count=50, session=session)
    # both backends went initial -> healthy when the proxy started
    assert {(e["backend"], e["new"]) for e in past} >= {("b1", "healthy"), ("b2", "healthy")}


def test_backend_control_faults_and_its_refusals(lab):
    control = BackendControl(lab.backend_url("b1"))
    assert control.set_faults({"latency_ms": 250})["faults"]["latency_ms"] == 250
    with pytest.raises(Refused) as info:
        control.set_faults({"latency_ms": -1, "nope": 1})
    assert info.value.status == 400 and "latency_ms must be >= 0" in info.value.message
    assert len(info.value.errors) == 2  # every problem, each on its own
    assert control.clear_faults()["faults"]["latency_ms"] == 0
    control.crash()
    lab.procs["b1"].wait(5)
    with pytest.raises(Unreachable):
        control.stats()


def test_line_splitter_handles_split_and_bad_lines():
    s = LineSplitter()
    assert s.feed(b'{"type":"a"}\n{"ty') == [{"type": "a"}]
    assert s.feed(b'pe":"b"}\nnot json\n\n') == [
        {"type": "b"}, {"type": "warning", "source": "bridge",
                        "message": "unreadable event line: b'not json'"}]
