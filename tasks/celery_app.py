"""create_celery(): the one Celery app, configured from `celeryconfig` (lazily, on first use).

Celery is handed the settings themselves, never the module's name: given a name, its loader
imports the module with the current folder first on `sys.path`, so a `celeryconfig.py` of
whatever project `celery` or `runlane` was started in would configure Runlane's app.
"""
from __future__ import annotations

from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from celery.local import PromiseProxy
from kombu import Connection

import celeryconfig
from tasks.broker import TRANSPORT, transport_for


class _Connection(Connection):
    """Shows Runlane's Redis transport as `redis://` in URLs (the worker's banner, `celery
    inspect`), the way kombu shows py-amqp as `amqp://`: a class path is not a URL scheme,
    and the banner read `tasks.broker:Transport://`. Only `info()`/`as_uri()` use this map;
    the connection itself keeps the transport."""

    resolve_aliases = {**Connection.resolve_aliases, TRANSPORT: "redis"}


class _AMQP(AMQP):
    Connection = _Connection


def celery_settings() -> dict[str, Any]:
    """`celeryconfig`'s settings plus the broker transport: Runlane's own for a plain
    `redis://` broker, kombu's for any other scheme. Chosen here, not in `celeryconfig`, so
    that the settings module imports nothing of the worker (this module imports it)."""
    settings = celeryconfig.celery_settings()
    broker_url = settings["broker_url"]
    settings["broker_transport"] = transport_for(broker_url) if broker_url else None
    return settings


def create_celery() -> Celery:
    app = Celery("runlane", amqp=_AMQP, include=["tasks.run", "tasks.maintenance"])
    # Evaluated once, when Celery first reads its configuration (not at import).
    app.config_from_object(PromiseProxy(celery_settings))
    app.set_default()
    return app
