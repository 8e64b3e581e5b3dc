"""create_celery(): the one Celery app, configured from `celeryconfig` (lazily, on first use).

Celery is handed the settings themselves, never the module's name: given a name, its loader
imports the module with the current folder first on `sys.path`, so a `celeryconfig.py` of
whatever project `celery` or `runlane` was started in would configure Runlane's app.
"""
from __future__ import annotations

from celery import Celery
from celery.app.amqp import AMQP
from celery.local import PromiseProxy
from kombu import Connection

import celeryconfig
from tasks.broker import TRANSPORT


class _Connection(Connection):
    """Shows Runlane's Redis transport as `redis://` in URLs (the worker's banner, `celery
    inspect`), the way kombu shows py-amqp as `amqp://`: a class path is not a URL scheme,
    and the banner read `tasks.broker:Transport://`. Only `info()`/`as_uri()` use this map;
    the connection itself keeps the transport."""

    resolve_aliases = {**Connection.resolve_aliases, TRANSPORT: "redis"}


class _AMQP(AMQP):
    Connection = _Connection


def create_celery() -> Celery:
    app = Celery("runlane", amqp=_AMQP, include=["tasks.run", "tasks.maintenance"])
    # Evaluated once, when Celery first reads its configuration (not at import).
    app.config_from_object(PromiseProxy(celeryconfig.celery_settings))
    app.set_default()
    return app
