"""redis-py's low-level connection, behind the small API Runlane needs of it.

Two callers do not wait for each reply the way redis-py's client does. The event publisher
(`events/transport.py`) sends a PUBLISH, goes on, and reads its reply before its next command;
the submission rate limit (`webapp/ratelimit.py`) sends INCR and EXPIRE in one write and reads
the count once the request needs it. Both hold one connection across calls, send commands
without reading, and read the replies later, in order. redis-py's client API has no such
thing, so they need its connection and pool themselves: `ConnectionPool.get_connection()` /
`release()`, and `Connection.send_command`, `pack_commands` + `send_packed_command`,
`read_response`, `can_read` and `disconnect`, which redis-py documents as internals. This module
is the one place that touches them; `tests/contract/test_redis_wire_contract.py` pins what it
relies on against the installed redis-py, so a release that changes them fails there.

What it relies on, beyond the names:
- `get_connection()` (no arguments since redis-py 5.3) hands a connection already connected:
  an unreachable server raises there, not at the first send;
- a send writes and reads nothing, except that redis-py runs its PING health check first when
  `health_check_interval` has passed since the last reply was read, and that check would read
  a reply owed to the caller: `Wire` asks for the check only when it owes no reply;
- `read_response()` returns the reply as Redis sent it (no client-side conversion: an integer
  reply is an `int`), raises `ResponseError` for an error reply with the stream intact, and a
  connection error when the connection broke;
- `can_read(timeout=0)` never waits: False on a quiet open connection, True for data nobody
  asked for, a connection error once the server closed it;
- commands packed together are sent as they are: no MULTI/EXEC, one reply each.

Imports nothing of Runlane: it sits with the plumbing, under every room that uses Redis.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis

# What a broken (or never made) connection raises from any call below; the connection is then
# unusable: give it back with `broken=True` (a failed call already closed it).
BROKEN: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)
# Anything a call below may raise: BROKEN, a refused command, a garbled reply.
ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)
# An error reply to one command (read whole: the connection goes on).
Refused = redis.ResponseError

Command = Sequence[Any]


class Wire:
    """One connection borrowed from a client's pool, for commands whose replies are read
    later, in the order they were sent. Not thread-safe: one user at a time (callers lock)."""

    __slots__ = ("_pool", "_connection", "owed")

    def __init__(self, pool: Any, connection: Any) -> None:
        self._pool = pool
        self._connection = connection
        self.owed = 0  # commands sent whose reply has not been read

    @classmethod
    def borrow(cls, client: redis.Redis) -> Wire:
        """A connection of `client`'s pool, connected (and through the connection handshake:
        AUTH, HELLO, a `client_name` given to the client).

        Raises:
            BROKEN: Redis could not be reached (the connection goes back to the pool).
            redis.RedisError: the handshake was refused (a wrong password, say).
        """
        pool = client.connection_pool
        return cls(pool, pool.get_connection())

    def send(self, *command: Any) -> None:
        """Write one command; its reply waits on the connection for `read`.

        Raises:
            BROKEN: the connection broke (it is closed; give it back broken).
        """
        self._connection.send_command(*command, check_health=not self.owed)
        self.owed += 1

    def send_all(self, commands: Iterable[Command]) -> None:
        """Write several commands in one go (not a transaction: each runs on its own); one
        reply each waits for `read`.

        Raises:
            BROKEN: the connection broke (it is closed; give it back broken).
        """
        batch = [tuple(command) for command in commands]
        packed = self._connection.pack_commands(batch)
        self._connection.send_packed_command(packed, check_health=not self.owed)
        self.owed += len(batch)

    def read(self) -> Any:
        """The reply of the oldest command not read yet, as Redis sent it (an integer reply is
        an int, a string reply bytes). Waits for it up to the client's `socket_timeout`.

        Raises:
            Refused: that command was refused (the reply was read whole; read on).
            BROKEN: the connection broke or the wait timed out (it is closed).
        """
        try:
            reply = self._connection.read_response()
        except Refused:
            self.owed -= 1
            raise
        self.owed -= 1
        return reply

    def check_open(self) -> None:
        """Check, without waiting, that the server has not closed this connection (call it
        when no reply is owed: a reply waiting counts as data nobody asked for).

        Raises:
            BROKEN: the server closed it, or sent something nobody asked for.
        """
        if self._connection.can_read(timeout=0):
            raise redis.ConnectionError("unexpected data on the connection")

    def give_back(self, *, broken: bool = False) -> None:
        """Return the connection to its pool. `broken` (after an error), or replies still
        unread, close it first: nothing half-read may reach the pool's next user."""
        if broken or self.owed:
            self._connection.disconnect()
        self.owed = 0
        self._pool.release(self._connection)
