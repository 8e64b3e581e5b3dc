"""tasks.broker against a real Redis: one redis-py client per channel, rebuilt with the
channel's pool, and messages and fanout events still go through it."""
from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue

from tasks.broker import TRANSPORT, Channel, Transport, transport_for


def test_only_plain_redis_urls_get_it() -> None:
    assert transport_for("redis://127.0.0.1:6379/0") == TRANSPORT
    assert transport_for("rediss://example.org:6380/0") is None  # kombu's TLS defaults
    assert transport_for("amqp://guest@localhost//") is None


@pytest.fixture
def connection(redis_url: str) -> Iterator[Connection]:
    with Connection(redis_url, transport=TRANSPORT) as conn:
        yield conn


def test_the_app_sends_through_it(runlane_env: dict[str, str]) -> None:
    import tasks

    with tasks.app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)
        assert isinstance(conn.default_channel, Channel)


def test_one_client_per_channel_until_its_pool_is_replaced(connection: Connection) -> None:
    channel = connection.channel()
    try:
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
        given = redis.Redis(connection_pool=channel.pool)
        with channel.conn_or_acquire(given) as client:
            assert client is given
        old_pool = channel.pool
        channel._after_fork()  # what kombu does in a forked child: drop the parent's pool
        with channel.conn_or_acquire() as fresh:
            assert fresh is not first
            assert fresh.connection_pool is channel.pool is not old_pool
            assert fresh.ping()
    finally:
        channel.close()


def test_messages_and_fanout_events_go_through(connection: Connection, redis_url: str) -> None:
    with connection.SimpleQueue(f"broker-test-{uuid.uuid4().hex}") as simple:
        for n in range(3):
            simple.put({"n": n})
        got, tags = [], []
        for _ in range(3):
            message = simple.get(timeout=5)
            message.ack()  # acks_late's path: the unacked entry is removed in a pipeline
            got.append(message.payload)
            tags.append(message.delivery_tag)
        assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
        with pytest.raises(simple.Empty):
            simple.get(timeout=0.2)
    raw = redis.Redis.from_url(redis_url)
    assert not any(raw.hexists("unacked", tag) for tag in tags)

    # Fanout, as Celery's task events travel: a Redis PUBLISH each, in order.
    exchange = Exchange(f"broker-fanout-{uuid.uuid4().hex}", type="fanout")
    listener = raw.pubsub(ignore_subscribe_messages=True)
    listener.psubscribe(f"*{exchange.name}*")
    assert listener.get_message(timeout=2) is None  # the subscribe confirmation, skipped
    channel = connection.channel()
    try:
        producer = Producer(channel, exchange)
        for n in range(3):
            producer.publish({"event": n})
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.1)
            if message is not None:
                got.append(json.loads(base64.b64decode(json.loads(message["data"])["body"])))
        assert got == [{"event": 0}, {"event": 1}, {"event": 2}]
    finally:
        channel.close()
        listener.close()


def _consumer_with_unacked_message_and_brpop_in_flight(url: str, transport: str) -> Connection:
    """What a Celery worker running a task (acks_late) looks like while it waits for the next
    one: a message delivered and not acknowledged, a BRPOP waiting on the server, and a fanout
    queue deleted on close (Celery's remote-control queue)."""
    conn = Connection(url, transport=transport)
    channel = conn.default_channel
    name = f"broker-restart-{uuid.uuid4().hex}"
    tasks_queue = Queue(name)
    control = Queue(f"{name}.pidbox", Exchange(f"{name}.x", type="fanout"), auto_delete=True)
    with conn.Producer(channel=channel) as producer:
        producer.publish({"n": 1}, routing_key=name, declare=[tasks_queue])
    got: list[object] = []
    conn.Consumer(channel=channel, queues=[tasks_queue, control],
                  callbacks=[lambda body, message: got.append(message)]).consume()
    conn.drain_events(timeout=5)
    assert got  # delivered, not acknowledged
    try:
        conn.drain_events(timeout=0.2)  # leaves its BRPOP waiting on the server
    except TimeoutError:
        pass
    return conn


def test_a_channel_closes_cleanly_after_redis_dies_under_an_unacknowledged_message(tmp_path):
    from runlane.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        conn = _consumer_with_unacked_message_and_brpop_in_flight(url, TRANSPORT)
        assert server.process is not None
        server.process.kill()  # no goodbye to its clients
        server.process.wait()
        # Celery's consumer on a lost connection: collect, then close the same connection.
        conn.collect(socket_timeout=1)
        conn.close()  # kombu's own transport raises AttributeError ('hostname') here
        channel = Channel.__new__(Channel)  # a channel whose connection is gone ...
        channel._pool, channel.connection = None, None
        with pytest.raises(redis.ConnectionError):  # ... answers as a lost connection does
            channel.pool  # noqa: B018 - reading the property is what raises
    finally:
        server.stop()
