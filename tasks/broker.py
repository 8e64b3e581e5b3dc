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
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

TRANSPORT = "tasks.broker:Transport"


class Channel(kombu_redis.Channel):
    _client_for_pool: Any = None

    @property
    def pool(self) -> Any:
        if self._pool is None and (self.connection is None or self.connection.client is None):
            raise redis.ConnectionError("the broker connection of this channel is closed")
        return kombu_redis.Channel.pool.fget(self)  # type: ignore[attr-defined]

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


def transport_for(broker_url: str) -> str | None:
    """This transport for plain `redis://` brokers; kombu's own choice for any other scheme
    (kombu gives `rediss://` its TLS defaults only under that scheme's own name)."""
    return TRANSPORT if broker_url.startswith("redis://") else None
