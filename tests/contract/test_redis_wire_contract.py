"""redis-py's low-level connection, as runlane/redis_wire.py uses it (for the event publisher
and the submission rate limit), against the installed redis-py and a real redis-server.

Pinned: a pool hands a connected connection (and an unreachable server fails there); a send
reads nothing; replies come back in order, unconverted; an error reply leaves the stream
intact; packed commands are not a transaction; a due health check never eats a reply owed
to the caller; `can_read(0)` tells a quiet open connection from one the server closed; a
read timeout and a lost connection surface as connection errors; a connection given back
with replies unread never hands them to its next user.
"""
from __future__ import annotations

import socket
import time
import uuid
import warnings
from collections.abc import Iterator

import pytest
import redis

from runlane.redis_wire import BROKEN, ERRORS, Refused, Wire

ADAPTER = "runlane/redis_wire.py"


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
    yield client
    client.close()


def key() -> str:
    return f"contract:wire:{uuid.uuid4().hex}"


def connection_id(wire: Wire) -> int:
    wire.send("CLIENT", "ID")
    return int(wire.read())


def kill(admin: redis.Redis, client_id: int) -> None:
    """CLIENT KILL one connection, and wait until the server has closed it."""
    admin.client_kill_filter(_id=client_id)
    deadline = time.monotonic() + 5
    while any(int(c["id"]) == client_id for c in admin.client_list()):
        assert time.monotonic() < deadline, "CLIENT KILL did not close the connection"
        time.sleep(0.01)


def test_errors_are_the_classes_the_callers_catch() -> None:
    assert issubclass(Refused, ERRORS), "a refused command must be one of ERRORS"
    for cls in BROKEN:
        assert issubclass(cls, ERRORS), f"{cls} is in BROKEN but not in ERRORS"
    assert not issubclass(Refused, BROKEN), (
        "redis-py's ResponseError became a connection error: the publisher would re-send "
        f"every publish after a refused one; {ADAPTER} must tell them apart")


def test_a_borrowed_connection_is_connected_before_its_first_command(redis_url: str,
                                                                    admin: redis.Redis) -> None:
    name = f"contract-{uuid.uuid4().hex[:12]}"
    named = redis.Redis.from_url(redis_url, client_name=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # get_connection() without arguments: no warning
            wire = Wire.borrow(named)
        assert any(c.get("name") == name for c in admin.client_list()), (
            "ConnectionPool.get_connection() no longer connects (and runs the handshake) "
            f"before handing the connection out: {ADAPTER}'s borrow() must connect itself, "
            "or an unreachable server shows only at the first send")
        assert wire.owed == 0
        wire.give_back()
    finally:
        named.close()


def test_an_unreachable_server_fails_at_borrow() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nobody listens there
    unreachable = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        with pytest.raises(BROKEN):
            Wire.borrow(unreachable)
    finally:
        unreachable.close()


def test_sends_read_nothing_and_replies_come_in_order_unconverted(client: redis.Redis,
                                                                  admin: redis.Redis) -> None:
    channel = key()
    listener = admin.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel)
    assert listener.get_message(timeout=2) is None  # the confirmation, skipped
    wire = Wire.borrow(client)
    try:
        for n in range(5):
            wire.send("PUBLISH", channel, f"m{n}")
        assert wire.owed == 5
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 5 and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.1)
            if message is not None:
                got.append(message["data"])
        assert got == [f"m{n}".encode() for n in range(5)], (
            "commands sent with send_command() did not reach Redis before their replies were "
            "read: the publisher's events would wait for its next command")
        replies = [wire.read() for _ in range(5)]
        assert replies == [1] * 5 and all(type(r) is int for r in replies), (
            f"read_response() no longer returns PUBLISH's integer reply as an int: {replies!r}")
        stored = key()
        admin.set(stored, b"\x00value")
        wire.send("GET", stored)
        assert wire.read() == b"\x00value", "read_response() converted a bulk string reply"
        assert wire.owed == 0
    finally:
        wire.give_back()
        listener.close()


def test_commands_packed_together_are_not_a_transaction(client: redis.Redis,
                                                        admin: redis.Redis) -> None:
    counter = key()
    wire = Wire.borrow(client)
    try:
        wire.send_all([("INCR", counter), ("EXPIRE", counter, 65)])
        assert wire.owed == 2
        assert int(wire.read()) == 1, "pack_commands() + send_packed_command(): INCR's reply"
        assert wire.read() in (1, True), "EXPIRE's reply"
        assert wire.owed == 0
        wire.send_all([("INCR", counter), ("EXPIRE", counter, 65)])
        assert [int(wire.read()), int(wire.read())] == [2, 1], (
            "commands packed together no longer get one reply each, in order (a MULTI/EXEC "
            "would add QUEUED replies): the rate limit would read the wrong count")
    finally:
        wire.give_back()
    assert 0 < admin.ttl(counter) <= 65


def test_an_error_reply_is_refused_and_the_stream_goes_on(client: redis.Redis,
                                                          admin: redis.Redis) -> None:
    text, counter = key(), key()
    admin.set(text, "not a number")
    wire = Wire.borrow(client)
    try:
        wire.send("INCR", text)
        wire.send("INCR", counter)
        with pytest.raises(Refused):
            wire.read()
        assert wire.read() == 1, (
            "after an error reply, read_response() no longer reads the next reply in order: "
            "the publisher would misattribute every later reply")
        assert wire.owed == 0
        wire.check_open()
    finally:
        wire.give_back()


def test_a_due_health_check_never_eats_a_reply_owed_to_the_caller(redis_url: str) -> None:
    checked = redis.Redis.from_url(redis_url, health_check_interval=0.05)  # type: ignore[arg-type]
    wire = Wire.borrow(checked)
    try:
        wire.send("ECHO", "first")
        time.sleep(0.15)  # the health check is due: no reply was read for longer than that
        wire.send("ECHO", "second")  # with a reply owed: no PING may go first
        assert [wire.read(), wire.read()] == [b"first", b"second"], (
            "send_command(..., check_health=False) no longer skips redis-py's PING health "
            "check: a check run while a reply is owed reads that reply as its PONG")
        time.sleep(0.15)
        wire.send("ECHO", "third")  # nothing owed: the health check may run, harmlessly
        assert wire.read() == b"third"
    finally:
        wire.give_back()
        checked.close()


def test_check_open_is_quiet_until_the_server_closes_the_connection(client: redis.Redis,
                                                                    admin: redis.Redis) -> None:
    wire = Wire.borrow(client)
    victim = connection_id(wire)
    started = time.monotonic()
    wire.check_open()  # open and quiet: no error, and no wait
    assert time.monotonic() - started < 0.5, "can_read(timeout=0) waited"
    kill(admin, victim)
    with pytest.raises(BROKEN):
        wire.check_open()
    wire.give_back(broken=True)
    again = Wire.borrow(client)  # the pool replaces the closed connection
    try:
        again.send("ECHO", "after")
        assert again.read() == b"after"
    finally:
        again.give_back()


def test_data_nobody_asked_for_fails_check_open(client: redis.Redis) -> None:
    wire = Wire.borrow(client)
    try:
        wire.send("ECHO", "unread")
        deadline = time.monotonic() + 5
        while True:  # until the reply is there: then can_read(0) must say so
            try:
                wire.check_open()
            except BROKEN:
                break
            assert time.monotonic() < deadline, (
                "can_read(timeout=0) never reported the reply waiting on the connection")
            time.sleep(0.01)
    finally:
        wire.give_back(broken=True)


def test_a_connection_lost_with_a_reply_owed_fails_as_broken(client: redis.Redis,
                                                             admin: redis.Redis) -> None:
    wire = Wire.borrow(client)
    kill(admin, connection_id(wire))
    with pytest.raises(BROKEN):
        # Into a connection the server closed: the write may still succeed (TCP), the read
        # of its reply may not: the publisher re-sends what it sent since the last read.
        wire.send("PUBLISH", key(), "lost")
        wire.read()
    wire.give_back(broken=True)


def test_a_read_that_times_out_is_broken(redis_url: str) -> None:
    impatient = redis.Redis.from_url(redis_url, socket_timeout=0.2)
    wire = Wire.borrow(impatient)
    try:
        wire.send("BLPOP", key(), 5)
        started = time.monotonic()
        with pytest.raises(BROKEN):
            wire.read()
        assert time.monotonic() - started < 2
    finally:
        wire.give_back(broken=True)
        impatient.close()


def test_a_connection_given_back_with_replies_unread_never_hands_them_on(
        redis_url: str) -> None:
    single = redis.Redis.from_url(redis_url, max_connections=1)
    try:
        wire = Wire.borrow(single)
        wire.send("ECHO", "stale")
        wire.give_back()  # a reply owed: closed, not pooled as it is
        after = Wire.borrow(single)  # the pool's one connection again
        try:
            after.send("ECHO", "fresh")
            assert after.read() == b"fresh", (
                "a connection given back with a reply unread handed it to its next user")
        finally:
            after.give_back()
    finally:
        single.close()
