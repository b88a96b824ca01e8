"""--mode tcp: the line-based game server, its control port, faults, TLS and PROXY headers."""

import json
import socket
import time

import pytest

from labs.backend import proxy_protocol as pp
from labs.backend.testing import GameClient, start_backend

from .wire import eventually

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def shared_game():
    with start_backend("g1", None, "127.0.0.1", "--mode", "tcp") as b:
        yield b


@pytest.fixture
def game(shared_game):
    assert shared_game.alive, shared_game.output()
    shared_game.clear_faults()
    eventually(lambda: shared_game.stats()["players"] == [])   # earlier tests' players left
    yield shared_game
    if shared_game.alive:
        shared_game.clear_faults()


def players(backend):
    return [p["player"] for p in backend.stats()["players"]]


def test_two_players_join_who_quit(game):
    assert game.url.startswith("tcp://") and game.control_port
    with game.game() as alice, game.game() as bob:
        assert alice.greeting == bob.greeting == "HELLO from g1"
        assert alice.command("JOIN alice") == "WELCOME alice on g1, players here: 1"
        assert bob.command("JOIN bob") == "WELCOME bob on g1, players here: 2"
        assert alice.command("WHO") == "PLAYERS 2 on g1: alice, bob"
        assert players(game) == ["alice", "bob"]
        assert bob.command("QUIT") == "BYE from g1"
        with pytest.raises(EOFError):
            bob.readline()                                  # the backend closed it
        assert alice.command("WHO") == "PLAYERS 1 on g1: alice"
        assert players(game) == ["alice"]
    eventually(lambda: players(game) == [])


def test_a_disconnect_removes_the_player(game):
    carol = game.game()
    carol.command("JOIN carol")
    with game.game() as dave:
        dave.command("JOIN dave")
        assert dave.command("WHO") == "PLAYERS 2 on g1: carol, dave"
        carol.close()                                       # no QUIT: the socket just goes
        eventually(lambda: dave.command("WHO") == "PLAYERS 1 on g1: dave")


def test_control_port_reports_the_players(game):
    with game.game() as erin:
        erin.command("JOIN erin")
        local = erin.sock.getsockname()
        view = game.stats()
        assert view["mode"] == "tcp" and view["control_port"] == game.control_port
        (p,) = view["players"]
        assert p["player"] == "erin" and p["client"] == p["peer"] == f"127.0.0.1:{local[1]}"
        assert p["commands"] == 1 and p["connected_s"] >= 0
        assert view["connections_open"] == 1 and view["tcp"]["port"] == game.port
        assert game.get("/health").status == 200 and game.get("/health/live").status == 200
        assert game.get("/").status == 404


def test_other_commands(game):
    with game.game() as g:
        assert g.command("PING") == "PONG g1"
        assert g.command("echo hello  world") == "hello  world"
        assert g.command("WHO") == "PLAYERS 0 on g1"
        assert g.command("JOIN") == "ERR usage: JOIN <player>"
        assert g.command("JOIN two words").startswith("ERR bad player name 'two words'")
        assert g.command("DANCE").startswith("ERR unknown command 'DANCE'; commands: JOIN")
        assert g.command("HELP").startswith("COMMANDS JOIN <player>, WHO")
        g.command("JOIN frank")
        me = json.loads(g.command("WHOAMI"))
        assert me["player"] == "frank" and me["backend"] == "g1"
        assert me["tls"] is None and me["proxy_protocol"] is None
        with game.game() as other:
            assert other.command("JOIN frank").startswith("ERR player frank is already connected")
        assert g.command("JOIN frankie") == "WELCOME frankie on g1, players here: 1"   # rename
        assert players(game) == ["frankie"]
        g.send("x" * 2000)
        assert g.readline() == "ERR line longer than 1024 bytes; closing"
        with pytest.raises(EOFError):
            g.readline()


def test_tcp_health_check_is_a_connect(game):
    with socket.create_connection(("127.0.0.1", game.port), timeout=3) as sock:
        assert sock.recv(100) == b"HELLO from g1\r\n"


def test_faults_per_line(game):
    with game.game() as g:
        game.control({"error_rate": 1})
        assert g.command("JOIN gina") == "ERR injected error"
        assert g.command("QUIT") == "ERR injected error"      # not executed: still connected
        game.control({"error_rate": 0, "dependency_down": True})
        assert g.command("PING") == "ERR dependency down"
        game.control({"dependency_down": False, "latency_ms": 150})
        started = time.monotonic()
        assert g.command("JOIN gina") == "WELCOME gina on g1, players here: 1"
        assert time.monotonic() - started >= 0.14
        game.control({"latency_ms": 0, "reset": True})
        with pytest.raises((ConnectionResetError, EOFError)):
            g.command("PING")
    eventually(lambda: players(game) == [])
    assert game.stats()["faults_injected"]["reset"] >= 1


def test_hang_and_warmup(game):
    game.control({"hang": True})
    with socket.create_connection(("127.0.0.1", game.port), timeout=0.5) as sock:
        with pytest.raises(socket.timeout):
            sock.recv(100)                                    # no greeting, ever
    game.control({"hang": False, "warmup_s": 30})
    with game.game() as g:
        assert g.greeting.startswith("ERR warming up, retry in ")
        assert g.command("PING").startswith("ERR warming up")
        assert game.get("/health/ready").status == 503
        game.control({"warmup_s": 0})
        assert g.command("PING") == "PONG g1"


def test_crash_mid_response_sends_half_a_line(game):
    game.control({"crash_mid_response": True})
    with socket.create_connection(("127.0.0.1", game.port), timeout=3) as sock:
        data = b""
        while chunk := sock.recv(100):
            data += chunk
    line = b"HELLO from g1\r\n"
    assert data == line[:len(line) // 2]


def test_crash_through_the_control_port_drops_every_player():
    with start_backend("g2", None, "127.0.0.1", "--mode", "tcp") as b:
        with b.game() as h:
            h.command("JOIN hank")
            assert b.crash(code=4) == 4
            with pytest.raises((EOFError, ConnectionResetError)):
                h.command("WHO")


def test_tcp_over_tls(tls_files):
    ctx = tls_files.client_context()
    with start_backend("gt", None, "127.0.0.1", "--mode", "tcp", *tls_files.server_args(),
                       ssl_context=ctx) as b:
        assert b.url.startswith("tcp+tls://")
        with b.game(server_hostname="shop.example") as g:
            assert g.greeting == "HELLO from gt"
            g.command("JOIN ivy")
            me = json.loads(g.command("WHOAMI"))
            assert me["tls"]["sni"] == "shop.example"
            assert me["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
            assert me["tls"]["alpn"] is None                 # no ALPN outside http mode
            assert b.stats()["players"][0]["player"] == "ivy"
        with pytest.raises(Exception, match="certificate verify failed"):
            GameClient("127.0.0.1", b.port, ssl_context=tls_files.client_context(
                cafile=tls_files.wrong_ca), server_hostname="shop.example")


def test_tcp_with_proxy_protocol():
    with start_backend("gp", None, "127.0.0.1", "--mode", "tcp", "--proxy-protocol") as b:
        v1 = b"PROXY TCP4 203.0.113.50 192.0.2.1 6000 7000\r\n"
        with GameClient("127.0.0.1", b.port, proxy_header=v1) as g1, \
                GameClient("127.0.0.1", b.port,
                           proxy_header=pp.v2(("2001:db8::50", 6001), ("2001:db8::1", 7000))) as g2:
            g1.command("JOIN jack")
            g2.command("JOIN kate")
            me = json.loads(g1.command("WHOAMI"))
            assert me["client"] == "203.0.113.50:6000"
            assert me["peer"] == "127.0.0.1:%d" % g1.sock.getsockname()[1]
            assert me["proxy_protocol"]["version"] == 1
            clients = {p["player"]: p["client"] for p in b.stats()["players"]}
            assert clients == {"jack": "203.0.113.50:6000", "kate": "[2001:db8::50]:6001"}
        # No header: no greeting, the connection is closed, a line is logged.
        with socket.create_connection(("127.0.0.1", b.port), timeout=3) as sock:
            sock.sendall(b"JOIN mallory\r\n")
            assert sock.recv(100) == b""
        eventually(lambda: "no PROXY protocol header: the connection starts with b'JOIN mallory"
                   in b.output())
        assert b.stats()["proxy_protocol_refused"] == 1
        assert b.stop() == 0   # SIGTERM: a clean exit with the PROXY listener
