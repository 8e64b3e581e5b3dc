"""Contract tests: these pin the behaviour of the library internals Runlane's adapters use.

Runlane reaches past the documented API of a few libraries, each from one adapter module:

- redis-py's low-level connection (commands sent without waiting, replies read later):
  `runlane/redis_wire.py`, for events/transport.py and webapp/ratelimit.py;
- kombu's Redis channel (one client per channel, a clean close after a lost connection):
  `tasks/broker.py`;
- Celery's app internals (its AMQP class, lazy settings, `declare`, its loggers' names):
  `tasks/celery_app.py`, `tasks/dispatch.py`, `runlane/logs.py`;
- simple-websocket's server as flask-sock builds it (its reader thread, socket and wsproto
  connection), and wsproto's events: `webapp/socket_conn.py`;
- SQLAlchemy's compiler and driver plumbing for the hot statements: `storage/prepared.py`.

Each test here exercises exactly what one adapter relies on, against the installed library,
with real parts (a real redis-server, real sockets on loopback). When one fails after an
upgrade, the adapter is what needs changing (or the version bound in setup.cfg, which
test_versions.py checks the installed versions against), not the code that uses it: the
failure names the adapter and the assumption that no longer holds, before an integration
test fails somewhere deep.
"""
