"""RedisPublisher against a real Redis of its own (stopped and restarted here): it does not
wait for each reply, so it must still deliver in order, notice a lost server at the next
publish, and recover on its own once the server is back."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from events.transport import CLIENT_NAME, IDLE_CHECK, RedisPublisher
from runlane.embedded import EmbeddedRedis
from tests.redis_kill import kill_publishers, publishers
from tests.support import wait_until


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    instance = EmbeddedRedis(tmp_path / "redis")
    instance.start()
    yield instance
    instance.stop()


def received(pubsub: redis.client.PubSub, count: int, timeout: float = 5.0) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            out.append(message["data"])
    return out


def subscribed(url: str, channel: str) -> redis.client.PubSub:
    pubsub = redis.Redis.from_url(url).pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    return pubsub


def test_publishes_arrive_in_order(server: EmbeddedRedis) -> None:
    publisher = RedisPublisher.from_url(server.url)
    pubsub = subscribed(server.url, "ch")
    try:
        assert all(publisher.publish("ch", f"event-{n}") for n in range(200))
        assert received(pubsub, 200) == [f"event-{n}".encode() for n in range(200)]
    finally:
        pubsub.close()
        publisher.close()


def test_a_lost_server_is_reported_and_the_publisher_recovers(server: EmbeddedRedis,
                                                              tmp_path: Path) -> None:
    publisher = RedisPublisher.from_url(server.url)
    assert publisher.publish("ch", "before")
    port = server.port
    server.stop()
    # The next publish finds the connection gone (at the latest when it sends).
    outcomes = [publisher.publish("ch", f"lost-{n}") for n in range(2)]
    assert outcomes[-1] is False
    restarted = EmbeddedRedis(tmp_path / "redis-again", port=port)
    restarted.start()
    try:
        pubsub = subscribed(restarted.url, "ch")
        wait_until(lambda: publisher.publish("ch", "after"), 5, "a publish is made again")
        assert received(pubsub, 1) == [b"after"]
        pubsub.close()
    finally:
        publisher.close()
        restarted.stop()


def test_a_refused_publish_does_not_break_the_ones_after_it(
        server: EmbeddedRedis, caplog: pytest.LogCaptureFixture) -> None:
    setup = redis.Redis.from_url(server.url)
    setup.acl_setuser("admin", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all"])
    admin = redis.Redis.from_url(server.url, username="admin", password="pw")
    publisher = RedisPublisher.from_url(server.url)
    pubsub = subscribed(server.url, "ch")
    try:
        assert publisher.publish("ch", "one")
        admin.execute_command("ACL", "SETUSER", "default", "-publish")
        assert publisher.publish("ch", "two")  # sent; Redis answers NOPERM, read later
        admin.execute_command("ACL", "SETUSER", "default", "+publish")
        with caplog.at_level("WARNING", logger="events.transport"):
            assert publisher.publish("ch", "three")
        assert "refused" in caplog.text
        assert received(pubsub, 2) == [b"one", b"three"]
    finally:
        pubsub.close()
        publisher.close()
        admin.close()
        setup.close()


def test_a_connection_the_server_closed_costs_no_publish(server: EmbeddedRedis) -> None:
    """CLIENT KILL (or a server restart, or an idle timeout) between two publishes: no
    publish may vanish into the dead connection."""
    publisher = RedisPublisher.from_url(server.url)
    pubsub = subscribed(server.url, "ch")
    try:
        for round_ in range(3):
            assert publisher.publish("ch", f"before-{round_}")
            assert publisher.publish("ch", "ping-reply")  # reads the reply of the one before
            kill_publishers(server.url)
            assert publisher.publish("ch", f"after-{round_}")
        # A publish made right after the kill went into the dead connection: the next
        # publish's read of its reply, or (for the last) flush, notices and re-sends it.
        assert publisher.flush()
        assert received(pubsub, 9) == [m.encode() for n in range(3)
                                       for m in (f"before-{n}", "ping-reply", f"after-{n}")]
    finally:
        pubsub.close()
        publisher.close()


def test_publishes_that_cannot_be_made_are_counted_lost(server: EmbeddedRedis) -> None:
    lost: list[int] = []
    publisher = RedisPublisher(redis.Redis.from_url(server.url, socket_connect_timeout=1),
                               on_lost=lost.append)
    assert publisher.publish("ch", "one")
    assert publisher.flush()  # confirmed: nothing of it can be lost later
    server.stop()
    outcomes = [publisher.publish("ch", f"lost-{n}") for n in range(3)]
    assert outcomes == [False, False, False]
    assert lost == [1, 1, 1]  # each publish that could not be made, once
    assert publisher.flush()  # nothing is outstanding: the False ones were never sent
    assert lost == [1, 1, 1]
    publisher.close()


def test_the_first_publish_after_a_quiet_spell_checks_the_connection(server: EmbeddedRedis) -> None:
    """The connection died while idle (a Redis restart between two runs): the first publish
    after it must not be written into it."""
    publisher = RedisPublisher.from_url(server.url)
    pubsub = subscribed(server.url, "ch")
    try:
        assert publisher.publish("ch", "first")
        sent = time.monotonic()
        assert received(pubsub, 1) == [b"first"]
        kill_publishers(server.url)
        wait_until(lambda: not publishers(server.url), 5, "the publisher's connection is gone",
                   interval=0.01)
        # Kept: the quiet spell itself is what is under test (longer than IDLE_CHECK).
        time.sleep(max(0.0, sent + IDLE_CHECK - time.monotonic()) + 0.001)
        assert publisher.publish("ch", "second")  # no later publish, no flush
        assert received(pubsub, 1) == [b"second"]
    finally:
        pubsub.close()
        publisher.close()


def test_a_user_that_may_not_name_its_connection_still_publishes(server: EmbeddedRedis) -> None:
    """An ACL without `+client` refuses CLIENT SETNAME (NOPERM) on every connect: that is
    no reason to lose every live publish, let alone to raise into the run."""
    setup = redis.Redis.from_url(server.url)
    setup.acl_setuser("pub", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                      commands=["+@all", "-client"])
    url = server.url.replace("redis://", "redis://pub:pw@")
    publisher = RedisPublisher.from_url(url)
    pubsub = subscribed(server.url, "ch")
    try:
        assert publisher.publish("ch", "one")
        assert publisher.flush()
        assert publisher.publish("ch", "two")
        assert publisher.flush()
        assert received(pubsub, 2) == [b"one", b"two"]
    finally:
        pubsub.close()
        publisher.close()
        setup.close()


def test_an_unreachable_server_costs_one_wait_not_one_per_publish() -> None:
    """A server that accepts connections and never answers (hung, or a black-holed port):
    the first publish waits for its timeout; the next, right after, gives up at once."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    lost: list[int] = []
    client = redis.Redis(host="127.0.0.1", port=hung.getsockname()[1], socket_timeout=0.3,
                         socket_connect_timeout=0.3, client_name=CLIENT_NAME)
    publisher = RedisPublisher(client, on_lost=lost.append)
    try:
        assert publisher.publish("ch", "one") is False
        started = time.monotonic()
        assert publisher.publish("ch", "two") is False
        assert time.monotonic() - started < 0.2
        assert lost == [1, 1]
    finally:
        publisher.close()
        hung.close()
