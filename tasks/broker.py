"""Transport: kombu's Redis transport, keeping one redis-py client per channel.

kombu's Redis channel builds a new `redis.Redis` for every command it sends outside its
consumer loop: each task message sent, each task event published, each acknowledgement.
With redis-py 8 building one costs ~50 µs (its response-callback table is rebuilt per
client): a sixth of a submission's `apply_async`, and a quarter of the CPU a worker's main
process spent per task, some of it while the task's own child waited for a core (0.45 ms of
`echo`'s end-to-end p50 on two cores; issue 9, docs/benchmarks.md item 24). The client holds
no connection of its own (it borrows one from the channel's pool per command and is safe to
share), so one per channel does the same work; it is rebuilt whenever the channel's pool is
(after a fork, after a reconnect).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

TRANSPORT = "tasks.broker:Transport"


class Channel(kombu_redis.Channel):
    _client_for_pool: Any = None

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
