"""Transport: kombu's Redis transport, keeping one redis-py client per channel.

kombu's Redis channel builds a new `redis.Redis` for every command it sends outside its
consumer loop: each task message sent, each task event published, each acknowledgement.
With redis-py 8 building one is not cheap (its response-callback table is rebuilt per
client): a visible share of a submission's `apply_async` and of the CPU a worker's main
process spends per task, some of it while the task's own child waits for a core, so it
lengthens every run's end-to-end path on a small machine (docs/benchmarks.md). The client holds
no connection of its own (it borrows one from the channel's pool per command and is safe to
share), so one per channel does the same work; it is rebuilt whenever the channel's pool is
(after a fork, after a reconnect).

It also closes cleanly when the broker connection was lost. kombu's `Channel.close` first
reads the reply of the BRPOP in flight; on a dead socket that read raises, so the close stops
before it has closed anything. Celery's consumer then closes the same connection a second
time after `Connection.collect()` has detached the transport from it (`transport.client` is
None), and the channel, still open, rebuilds its pool to put the unacknowledged messages back:
`_connparams` reads `None.hostname`, an `AttributeError` that no caller treats as a connection
error, and the worker exits "Unrecoverable error". An idle worker has nothing unacknowledged
and survives, a worker running a task (`task_acks_late`) does not. So: a BRPOP reply lost with
its connection counts as "nothing read", and a channel whose connection is gone answers any
further command with a connection error, which kombu and Celery handle (the message is left
for redelivery; the run's claim makes a duplicate a no-op).

This module is the one place that reaches into kombu (tests/contract/test_kombu_contract.py
pins what it relies on against the installed kombu):
- `kombu.transport.redis.Channel` / `Transport`, subclassed: kombu builds a transport's
  channels from `Transport.Channel`, and finds this transport by its class path;
- every command kombu's channel sends outside its consumer loop (publish, ack, restore, a
  fanout event) takes its client from `Channel.conn_or_acquire(client=None)`, a context
  manager, which builds one with `Channel._create_client()`: a `redis.Redis` on
  `Channel.pool` holding no connection of its own;
- `Channel.pool` is a property caching the pool in `Channel._pool` (None until built, and
  again after `_disconnect_pools()`: a fork, a close), built from `channel.connection.client`,
  the kombu `Connection`, which `Connection.collect()` and `close()` set to None;
- `Channel.close()` reads the reply of a BRPOP in flight first (`_in_poll` truthy;
  `_brpop_read()` raises `Empty` for no message, one of `connection_errors` when the
  connection died), then discards the channel from `connection.cycle`, deletes auto-delete
  fanout queues, `_disconnect_pools()`, `_close_clients()`, and ends with
  `virtual.Channel.close()`, which sets `closed` and puts unacknowledged messages back;
- `Connection.resolve_aliases` maps a transport to the scheme `info()` and `as_uri()` show.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

import kombu
import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

TRANSPORT = "tasks.broker:Transport"
# kombu's type stubs (celery-types) describe its public API only, none of the internals
# below: the contract tests pin those instead of the type checker.
_KombuChannel: Any = kombu_redis.Channel


class Channel(_KombuChannel):  # type: ignore[misc]
    _client_for_pool: Any = None

    @property
    def pool(self) -> Any:
        if self._pool is None and (self.connection is None or self.connection.client is None):
            raise redis.ConnectionError("the broker connection of this channel is closed")
        return _KombuChannel.pool.fget(self)

    def close(self) -> None:
        if self._in_poll and not self.closed:
            self._closing = True
            try:
                self._brpop_read()
            except Empty:
                pass
            except self.connection_errors:
                pass  # its reply, if any, was lost with the connection: the close goes on
        try:
            super().close()
        except self.connection_errors:
            if self.closed:
                raise  # closed; only putting the unacknowledged messages back failed
            # Another command of the close (deleting an auto-delete queue) met the dead
            # connection: close the rest without the server, then report it as kombu would.
            self.connection.cycle.discard(self)
            self._disconnect_pools()
            self._close_clients()
            virtual.Channel.close(self)
            raise

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._client_for_pool
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._client_for_pool = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel


class BrokerConnection(kombu.Connection):
    """kombu's Connection, showing this transport as `redis://` in URLs (the worker's banner,
    `celery inspect`), the way kombu shows py-amqp as `amqp://`: a class path is not a URL
    scheme, and the banner read `tasks.broker:Transport://`. Only `info()`/`as_uri()` use
    this map; the connection itself keeps the transport. (For Celery's `AMQP.Connection`.)"""

    resolve_aliases = {**kombu.Connection.resolve_aliases, TRANSPORT: "redis"}  # noqa: RUF012


def transport_for(broker_url: str) -> str | None:
    """This transport for plain `redis://` brokers; kombu's own choice for any other scheme
    (kombu gives `rediss://` its TLS defaults only under that scheme's own name)."""
    return TRANSPORT if broker_url.startswith("redis://") else None
