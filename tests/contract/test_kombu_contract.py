"""kombu's Redis transport internals, as tasks/broker.py uses them, against the installed
kombu (and redis-py) and a real redis-server.

Pinned: the names tasks/broker.py overrides or calls exist with the shapes it expects;
kombu finds the transport by its class path and builds channels from `Transport.Channel`;
every command sent outside the consumer loop takes its client from `conn_or_acquire`, which
`_create_client` feeds with a pool-backed client holding no connection of its own; the pool
is cached in `_pool` and dropped by `_disconnect_pools`; `Connection.collect()` detaches the
transport from its connection; a BRPOP in flight shows in `_in_poll`, and `_brpop_read`
raises `Empty` or a connection error; and, all of it together, a channel whose connections
(or whose server) died under an unacknowledged message closes cleanly the way Celery's
consumer closes it.
"""
from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

import kombu
import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from runlane.embedded import EmbeddedRedis
from tasks.broker import TRANSPORT, BrokerConnection, Channel, Transport

ADAPTER = "tasks/broker.py"


def name(prefix: str) -> str:
    return f"contract-{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def kill_named(admin: redis.Redis, client_name: str) -> int:
    """CLIENT KILL every connection of that name; wait until Redis closed them."""
    victims = [int(c["id"]) for c in admin.client_list() if c.get("name") == client_name]
    for victim in victims:
        admin.client_kill_filter(_id=victim)
    deadline = time.monotonic() + 5
    while any(c.get("name") == client_name for c in admin.client_list()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return len(victims)


# -- the names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("owner", "attribute", "why"), [
    (kombu_redis.Channel, "conn_or_acquire", "overridden: one client per channel"),
    (kombu_redis.Channel, "_create_client", "called to build that client"),
    (kombu_redis.Channel, "pool", "overridden (a property; its fget is called)"),
    (kombu_redis.Channel, "_pool", "read: None until the pool is built"),
    (kombu_redis.Channel, "_in_poll", "read by close(): a BRPOP in flight"),
    (kombu_redis.Channel, "_closing", "set by close()"),
    (kombu_redis.Channel, "_brpop_read", "called by close() to read the BRPOP reply"),
    (kombu_redis.Channel, "_disconnect_pools", "called by close() after a failed close"),
    (kombu_redis.Channel, "_close_clients", "called by close() after a failed close"),
    (kombu_redis.Channel, "close", "overridden, and called through super()"),
    (virtual.Channel, "close", "called after a failed close: marks closed, restores"),
    (kombu_redis.Transport, "Channel", "overridden: the class kombu builds channels from"),
    (kombu.Connection, "resolve_aliases", "extended: the scheme info()/as_uri() show"),
])
def test_kombu_has_what_the_adapter_uses(owner: type, attribute: str, why: str) -> None:
    assert hasattr(owner, attribute), (
        f"{owner.__module__}.{owner.__qualname__}.{attribute} is gone; {ADAPTER} uses it "
        f"({why}): the adapter must change for this kombu")


def test_the_shapes_the_adapter_relies_on() -> None:
    assert isinstance(inspect.getattr_static(kombu_redis.Channel, "pool"), property), (
        f"kombu's Channel.pool is no longer a property: {ADAPTER} calls its fget")
    assert kombu_redis.Channel._pool is None, "Channel._pool no longer starts as None"
    assert not kombu_redis.Channel._in_poll, "Channel._in_poll no longer starts falsy"
    assert kombu_redis.Transport.Channel is kombu_redis.Channel
    signature = inspect.signature(kombu_redis.Channel.conn_or_acquire)
    assert list(signature.parameters) == ["self", "client"], (
        f"Channel.conn_or_acquire{signature}: {ADAPTER} overrides conn_or_acquire(client=None)")
    assert isinstance(kombu.Connection.resolve_aliases, dict)


def test_closed_tells_whether_the_virtual_close_ran(redis_url: str) -> None:
    with Connection(redis_url, transport=TRANSPORT) as conn:
        channel = conn.channel()
        assert channel.closed is False, (
            f"a channel no longer has `closed` (False while open): {ADAPTER}'s close reads it")
        virtual.Channel.close(channel)
        assert channel.closed is True, "virtual.Channel.close() no longer sets `closed`"
        channel.close()  # the rest of kombu's close, on a channel marked closed: no error


# -- the client per channel ----------------------------------------------------------------------


class _CountingChannel(Channel):
    acquired = 0
    created = 0

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        type(self).acquired += 1
        with super().conn_or_acquire(client) as got:
            yield got

    def _create_client(self, asynchronous: bool = False) -> Any:
        if not asynchronous:
            type(self).created += 1
        return super()._create_client(asynchronous=asynchronous)


class _CountingTransport(Transport):
    Channel = _CountingChannel


def test_kombu_finds_the_transport_by_its_class_path(redis_url: str) -> None:
    with Connection(redis_url, transport=TRANSPORT) as conn:
        assert type(conn.transport) is Transport
        assert type(conn.default_channel) is Channel, (
            "kombu no longer builds channels from Transport.Channel")


def test_every_command_outside_the_consumer_loop_goes_through_conn_or_acquire(
        redis_url: str) -> None:
    _CountingChannel.acquired = _CountingChannel.created = 0
    with Connection(redis_url, transport=_CountingTransport) as conn:
        with conn.SimpleQueue(name("queue")) as simple:
            for n in range(5):
                simple.put({"n": n})  # a task message sent
            for _ in range(5):
                simple.get(timeout=5).ack()  # an acknowledgement (acks_late)
        channel = conn.channel()
        try:
            producer = Producer(channel, Exchange(name("fanout"), type="fanout"))
            for n in range(5):
                producer.publish({"event": n})  # a task event
        finally:
            channel.close()
    assert _CountingChannel.acquired >= 15, (
        f"kombu took a client from conn_or_acquire {_CountingChannel.acquired} times for 15 "
        f"publishes and acks: it sends them some other way now, and {ADAPTER}'s one client "
        "per channel no longer saves anything")
    assert _CountingChannel.created <= 2, (  # one per channel: the queue's and the fanout's
        f"{_CountingChannel.created} clients built for two channels: kombu builds clients "
        "with _create_client outside conn_or_acquire")


def test_the_client_kombu_builds_is_on_the_pool_and_holds_no_connection(redis_url: str) -> None:
    with Connection(redis_url) as conn:  # kombu's own transport
        channel = conn.default_channel
        client = channel._create_client()
        assert isinstance(client, redis.Redis)
        assert client.connection_pool is channel.pool, (
            "_create_client() no longer builds its client on Channel.pool")
        assert client.connection is None, (
            "the client _create_client() builds holds a connection of its own: sharing one "
            f"per channel ({ADAPTER}) would no longer be thread-safe")
        errors: list[BaseException] = []

        def hammer() -> None:
            try:
                for _ in range(50):
                    assert client.ping()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not errors, f"one client shared by threads failed: {errors[:1]}"


def test_the_pool_is_cached_in__pool_and_dropped_by_disconnect_pools(redis_url: str) -> None:
    with Connection(redis_url) as conn:
        channel = conn.default_channel
        pool = channel.pool
        assert channel._pool is pool, "Channel.pool no longer caches the pool in _pool"
        channel._disconnect_pools()
        assert channel._pool is None, "_disconnect_pools() no longer resets _pool"
        assert channel.pool is not pool
        channel._after_fork()  # kombu's after-fork hook: the parent's pool is dropped
        assert channel._pool is None


def test_collect_detaches_the_transport_and_the_adapter_answers_with_a_connection_error(
        redis_url: str) -> None:
    conn = Connection(redis_url, transport=TRANSPORT)
    channel = conn.channel()
    assert channel.connection is conn.transport and conn.transport.client is conn, (
        "a channel no longer reaches its kombu Connection as channel.connection.client")
    transport = conn.transport
    conn.collect()  # what Celery's consumer does with a connection it lost
    assert transport.client is None, (
        "Connection.collect() no longer detaches the transport (transport.client = None)")
    channel._disconnect_pools()
    with pytest.raises(redis.ConnectionError):
        channel.pool  # noqa: B018 - the property is what is tested
    conn.close()


# -- the close ---------------------------------------------------------------------------------


def _waiting_consumer(url: str, transport: Any, client_name: str,
                      ) -> tuple[Connection, Any, list[Any], str]:
    """A consumer as a Celery worker is while it runs a task (acks_late): one message
    delivered and not acknowledged, a BRPOP waiting on the server for the next."""
    conn = Connection(url, transport=transport, transport_options={"client_name": client_name})
    channel = conn.default_channel
    queue_name = name("tasks")
    queue = Queue(queue_name)
    control = Queue(f"{queue_name}.pidbox", Exchange(f"{queue_name}.x", type="fanout"),
                    auto_delete=True)
    with conn.Producer(channel=channel) as producer:
        producer.publish({"n": 1}, routing_key=queue_name, declare=[queue])
    got: list[Any] = []
    conn.Consumer(channel=channel, queues=[queue, control],
                  callbacks=[lambda body, message: got.append(message)]).consume()
    conn.drain_events(timeout=5)
    assert got, "the message was not delivered"
    for _ in range(3):  # until a drain times out, leaving a BRPOP waiting on the server
        try:
            conn.drain_events(timeout=0.2)
        except TimeoutError:
            break
    return conn, channel, got, queue_name


def test_a_brpop_in_flight_shows_in__in_poll_and__brpop_read_reads_its_reply(
        redis_url: str, admin: redis.Redis) -> None:
    client_name = name("brpop")
    conn, channel, got, _queue = _waiting_consumer(redis_url, "redis", client_name)
    got[0].ack()  # nothing unacknowledged: kombu's own close below may fail
    try:
        assert channel._in_poll, "a BRPOP in flight no longer shows in Channel._in_poll"
        time.sleep(channel.brpop_timeout + 0.3)  # the server answers nil: no message
        with pytest.raises(Empty):
            channel._brpop_read()
        assert not channel._in_poll, "_brpop_read() no longer clears _in_poll"
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.2)  # the next BRPOP
        assert channel._in_poll, "drain_events() no longer leaves its BRPOP in _in_poll"
        assert kill_named(admin, client_name) >= 1
        with pytest.raises(channel.connection_errors) as raised:
            channel._brpop_read()
        assert isinstance(raised.value, redis.ConnectionError)
        assert not channel._in_poll
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - kombu's own close may trip on the dead connection
            pass


def test_the_adapters_channel_closes_and_restores_after_its_connections_were_killed(
        redis_url: str, admin: redis.Redis) -> None:
    """Connections closed by the server (CLIENT KILL, an idle timeout), the server alive:
    collect, then close the same connection again, as Celery's consumer does; the message
    left unacknowledged is put back through a rebuilt pool."""
    client_name = name("close")
    conn, channel, got, queue_name = _waiting_consumer(redis_url, TRANSPORT, client_name)
    assert channel._in_poll, "drain_events() no longer leaves its BRPOP in _in_poll"
    assert kill_named(admin, client_name) >= 1
    conn.collect(socket_timeout=1)
    conn.close()
    assert channel.closed, f"{ADAPTER}'s Channel.close() did not close the channel"
    assert admin.llen(queue_name) == 1, "the unacknowledged message was not put back"
    assert got


def test_the_adapters_channel_closes_after_the_server_died(tmp_path: Path) -> None:
    """The server gone (killed, no goodbye): kombu's own close stops at the dead BRPOP, and
    the second close rebuilt the pool from a detached transport (`None.hostname`, which
    made a worker exit for good); the adapter's closes in one go."""
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    try:
        conn, channel, _got, _queue = _waiting_consumer(url, TRANSPORT, name("dead"))
        assert channel._in_poll, "drain_events() no longer leaves its BRPOP in _in_poll"
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        conn.collect(socket_timeout=1)
        conn.close()
        assert channel.closed, f"{ADAPTER}'s Channel.close() did not close the channel"
    finally:
        server.stop()


def test_resolve_aliases_names_the_scheme_info_and_as_uri_show(redis_url: str) -> None:
    shown = BrokerConnection(redis_url, transport=TRANSPORT)
    plain = Connection(redis_url, transport=TRANSPORT)
    try:
        assert shown.info()["transport"] == "redis"
        assert shown.as_uri().startswith("redis://"), shown.as_uri()
        assert plain.info()["transport"] != "redis"  # what BrokerConnection is for
        assert isinstance(shown.transport, Transport)
    finally:
        shown.release()
        plain.release()
