"""flask-sock, simple-websocket and wsproto as webapp/socket_conn.py uses them, against the
installed versions, on real sockets: a Flask app served on loopback (werkzeug), a
websocket-client on the other end.

Pinned: flask-sock hands `SOCK_SERVER_OPTIONS` to simple-websocket's `Server`, registers a
`functools.wraps` copy of the view (websocket=True) and closes nothing the view closed;
the server builds its reader with `thread_class(target=<bound _thread>)` once the handshake
is done and keeps it as `thread`; after the handshake it exposes the socket (`sock`), the
open wsproto connection (`ws`), `receive_bytes`, `max_message_size`, `event` and `connected`;
wsproto turns the client's frames into the events the reader handles (fragments, pings,
pongs, close) and answers with the frames the writer sends. Through the adapter's own API,
so a failure here is the adapter's to fix.
"""
from __future__ import annotations

import inspect
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from flask import Flask
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server
from werkzeug.serving import make_server
from wsproto.connection import ConnectionState

from webapp.socket_conn import EventConnection, OneWriterReader, connection_of, install

ADAPTER = "webapp/socket_conn.py"
MAX_MESSAGE = 1000

Script = Callable[[Any], Any]
SCRIPTS: dict[str, Script] = {}
OUTCOMES: dict[str, queue.Queue[Any]] = {}


def marked(view: Callable[..., Any]) -> Callable[..., Any]:
    view.contract_mark = "kept"  # type: ignore[attr-defined]
    return view


def build_app() -> Flask:
    app = Flask("contract-websocket")
    app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": MAX_MESSAGE}
    sock = Sock(app)
    install(app)

    @sock.route("/ws/<name>", endpoint="probe")
    @marked
    def probe(ws: Any, name: str) -> None:
        try:
            result = SCRIPTS[name](ws)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result = exc
        OUTCOMES[name].put(result)

    return app


@pytest.fixture(scope="module")
def app() -> Flask:
    return build_app()


@pytest.fixture(scope="module")
def base_url(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def scripted(script: Script) -> str:
    name = f"s{len(SCRIPTS)}"
    SCRIPTS[name] = script
    OUTCOMES[name] = queue.Queue()
    return name


def outcome(name: str, timeout: float = 10.0) -> Any:
    try:
        result = OUTCOMES[name].get(timeout=timeout)
    except queue.Empty:
        pytest.fail("the socket's view did not finish")
    if isinstance(result, BaseException):
        raise result
    return result


def finish(conn: EventConnection) -> None:
    """How the event socket's view ends (webapp/sockets.py)."""
    conn.close(1000, None)
    conn.shut()


def connect(base_url: str, name: str) -> websocket.WebSocket:
    return websocket.create_connection(f"{base_url}/ws/{name}", timeout=10)


def close_code(frame: websocket.ABNF) -> int:
    assert frame.opcode == websocket.ABNF.OPCODE_CLOSE, frame
    return int.from_bytes(frame.data[:2], "big")


def assert_ends_after_close(client: websocket.WebSocket) -> None:
    """Nothing after the close frame: no HTTP response, no second close, the socket ends."""
    raw = client.sock
    raw.settimeout(5)
    try:
        rest = raw.recv(4096)
    except (ConnectionResetError, OSError):
        rest = b""
    assert rest == b"", f"written after the close frame: {rest[:80]!r}"


# -- the library's names -----------------------------------------------------------------------


def test_the_server_takes_the_options_the_adapter_gives() -> None:
    parameters = inspect.signature(Server.__init__).parameters
    for option in ("thread_class", "max_message_size"):
        assert option in parameters, (
            f"simple_websocket.Server no longer takes `{option}`: {ADAPTER} depends on it")
    assert "ping_interval" in parameters  # left unset: the router drives keep-alive pings
    assert callable(getattr(Server, "_thread", None)), (
        "simple_websocket.Server._thread is gone: the reader's target is no longer the "
        f"server's bound _thread, which {ADAPTER} takes the server from")
    closed = ConnectionClosed(1000, "bye")
    assert (closed.reason, closed.message) == (1000, "bye")


def test_flask_sock_registers_a_wraps_copy_of_the_view_as_a_websocket_route(app: Flask) -> None:
    view = app.view_functions["probe"]
    assert getattr(view, "contract_mark", None) == "kept", (
        "flask-sock's route no longer copies the view's attributes (functools.wraps): "
        "webapp/sockets.py's @documented must then go above @sock.route")
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint == "probe"]
    assert rules and rules[0].websocket


# -- the server flask-sock builds ------------------------------------------------------------


def test_flask_sock_builds_the_server_with_the_options_and_our_reader(base_url: str) -> None:
    def script(ws: Any) -> dict[str, Any]:
        reader = ws.thread
        seen = {
            "server": isinstance(ws, Server),
            "reader": type(reader).__name__,
            "reader_server": getattr(reader, "server", None) is ws,
            "reader_alive": reader.is_alive() if isinstance(reader, threading.Thread) else None,
            "socket": isinstance(ws.sock, socket.socket),
            "wsproto_open": ws.ws.state is ConnectionState.OPEN,
            "receive_bytes": ws.receive_bytes,
            "max_message_size": ws.max_message_size,
            "event": all(callable(getattr(ws.event, m, None)) for m in ("set", "clear", "wait")),
            "connected": ws.connected,
        }
        conn = connection_of(ws)
        conn.send("hello")
        finish(conn)
        return seen

    name = scripted(script)
    client = connect(base_url, name)
    try:
        assert client.recv() == "hello"
        frame = client.recv_frame()
        assert close_code(frame) == 1000
        assert_ends_after_close(client)
    finally:
        client.close()
    seen = outcome(name)
    assert seen["server"], "flask-sock no longer hands the view a simple_websocket.Server"
    assert seen["reader"] == OneWriterReader.__name__, (
        "SOCK_SERVER_OPTIONS['thread_class'] no longer reaches the Server, or the Server "
        "no longer builds its reader from it")
    assert seen["reader_server"], "thread_class's target is no longer bound to the server"
    assert seen["reader_alive"], "the server no longer starts the reader it built"
    assert seen["socket"], "Server.sock is no longer the connection's socket"
    assert seen["wsproto_open"], "Server.ws is not an open wsproto connection after the handshake"
    assert isinstance(seen["receive_bytes"], int) and seen["receive_bytes"] > 0
    assert seen["max_message_size"] == MAX_MESSAGE, (
        "SOCK_SERVER_OPTIONS['max_message_size'] no longer reaches Server.max_message_size")
    assert seen["event"], "Server.event is no longer an Event"
    assert seen["connected"] is True, "Server.connected is not True after the handshake"


def test_the_view_without_the_reader_is_refused(base_url: str) -> None:
    def script(ws: Any) -> str:
        thread, ws.thread = ws.thread, threading.Thread()
        try:
            connection_of(ws)
        except RuntimeError as exc:
            return str(exc)
        finally:
            ws.thread = thread
            finish(connection_of(ws))
        return "accepted"

    name = scripted(script)
    client = connect(base_url, name)
    client.close()
    assert "install" in outcome(name)


def test_whole_messages_reach_the_writer_through_the_reader(base_url: str) -> None:
    def script(ws: Any) -> list[Any]:
        conn = connection_of(ws)
        got = [conn.receive(timeout=5) for _ in range(3)]
        for message in got:
            conn.send(repr(message))
        finish(conn)
        return got

    name = scripted(script)
    client = connect(base_url, name)
    try:
        client.send("one")
        client.send_frame(websocket.ABNF.create_frame("tw", websocket.ABNF.OPCODE_TEXT, fin=0))
        client.send_frame(websocket.ABNF.create_frame("o", websocket.ABNF.OPCODE_CONT, fin=1))
        client.send_binary(b"\x00\x01")
        echoed = [client.recv() for _ in range(3)]
    finally:
        client.close()
    assert outcome(name) == ["one", "two", b"\x00\x01"], (
        "wsproto's TextMessage/BytesMessage events (data, message_finished) no longer "
        "assemble into whole messages the way the reader expects")
    assert echoed == ["'one'", "'two'", "b'\\x00\\x01'"]


def test_a_receive_with_nothing_sent_returns_none_at_its_deadline(base_url: str) -> None:
    def script(ws: Any) -> tuple[Any, float]:
        conn = connection_of(ws)
        started = time.monotonic()
        got = conn.receive(timeout=0.3)
        elapsed = time.monotonic() - started
        finish(conn)
        return got, elapsed

    name = scripted(script)
    client = connect(base_url, name)
    try:
        got, elapsed = outcome(name)
    finally:
        client.close()
    assert got is None and 0.25 <= elapsed < 3, (got, elapsed)


def test_the_clients_pings_are_answered_by_the_writer_only(base_url: str) -> None:
    def script(ws: Any) -> int:
        conn = connection_of(ws)
        assert conn.receive(timeout=5) == "after-ping"  # the ping came first, on one stream
        owed = len(ws.thread.owed)  # noted by the reader, not answered by it
        assert conn.pay()
        conn.send("done")
        finish(conn)
        return owed

    name = scripted(script)
    client = connect(base_url, name)
    try:
        client.ping(b"abc")
        client.send("after-ping")
        first = client.recv_frame()
        second = client.recv_frame()
    finally:
        client.close()
    assert outcome(name) == 1, (
        "the reader did not note exactly one pong owed: simple-websocket's own reader (which "
        "writes pongs itself) ran instead of OneWriterReader.run, or wsproto no longer "
        "reports a Ping event")
    assert (first.opcode, first.data) == (websocket.ABNF.OPCODE_PONG, b"abc")
    assert (second.opcode, second.data) == (websocket.ABNF.OPCODE_TEXT, b"done")


def test_keep_alive_pings_and_a_client_that_stops_answering(base_url: str) -> None:
    def script(ws: Any) -> list[bool]:
        conn = connection_of(ws)
        results = [conn.ping()]
        assert conn.receive(timeout=5) == "answered"  # the client read the ping, ponged
        results.append(conn.ping())  # the pong arrived: a second ping goes out
        assert conn.receive(timeout=5) == "silent"  # the client did not read that one
        results.append(conn.ping())  # unanswered: closed 1008
        finish(conn)
        return results

    name = scripted(script)
    client = connect(base_url, name)
    try:
        opcode, _frame = client.recv_data_frame(control_frame=True)  # answers with a pong
        assert opcode == websocket.ABNF.OPCODE_PING
        client.send("answered")
        client.send("silent")
        frames = [client.recv_frame(), client.recv_frame()]  # raw: no automatic pong
    finally:
        client.close()
    assert outcome(name) == [True, True, False], (
        "wsproto's Pong event no longer reaches the reader, or Ping() no longer sends")
    assert frames[0].opcode == websocket.ABNF.OPCODE_PING
    assert close_code(frames[1]) == 1008


def test_the_peers_close_is_answered_by_the_writer(base_url: str) -> None:
    def script(ws: Any) -> tuple[Any, Any, bool, bool]:
        conn = connection_of(ws)
        try:
            conn.receive(timeout=5)
        except ConnectionClosed as exc:
            closed = (exc.reason, exc.message)
        else:
            closed = ("no ConnectionClosed", None)
        handshake_done = not conn.pay()  # sends the close reply
        still_open = conn.connected
        finish(conn)
        return (*closed, handshake_done, still_open)

    name = scripted(script)
    client = connect(base_url, name)
    try:
        client.send_close(status=4000, reason=b"bye")
        reply = client.recv_frame()
        assert close_code(reply) == 4000
        assert_ends_after_close(client)
    finally:
        client.close()
    code, reason, handshake_done, still_open = outcome(name)
    assert (code, reason) == (4000, "bye"), (
        "wsproto's CloseConnection event (code, reason) no longer reaches the reader")
    assert handshake_done and not still_open


def test_a_message_over_the_size_limit_is_refused_1009(base_url: str) -> None:
    def script(ws: Any) -> str:
        conn = connection_of(ws)
        try:
            conn.receive(timeout=5)
        except ConnectionClosed:
            result = "closed"
        else:
            result = "received"
        finish(conn)
        return result

    name = scripted(script)
    client = connect(base_url, name)
    try:
        client.send("x" * (MAX_MESSAGE + 1))
        assert close_code(client.recv_frame()) == 1009
    finally:
        client.close()
    assert outcome(name) == "closed"


def test_abort_fails_a_send_blocked_on_a_client_that_does_not_read(base_url: str) -> None:
    def script(ws: Any) -> tuple[str, float, float]:
        conn = connection_of(ws)
        assert conn.cap_send_buffer(4096)
        blocked_since: list[float] = []

        def watchdog() -> None:  # the router's ticker, in the web process
            deadline = time.monotonic() + 5
            while not conn.writing_since and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)
            blocked_since.append(conn.writing_since)
            conn.abort()

        threading.Thread(target=watchdog, daemon=True).start()
        started = time.monotonic()
        try:
            for _ in range(10_000):
                conn.send("x" * 8192)
            result = "never blocked"
        except (OSError, ConnectionClosed) as exc:
            result = type(exc).__name__
        elapsed = time.monotonic() - started
        conn.shut()
        return result, elapsed, blocked_since[0] if blocked_since else 0.0

    name = scripted(script)
    client = connect(base_url, name)
    try:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        result, elapsed, blocked_since = outcome(name, timeout=20)
    finally:
        client.close()
    assert result != "never blocked", "the client never filled the socket's buffers"
    assert blocked_since > 0, "a send blocked on the client left writing_since unset"
    assert elapsed < 10, elapsed
