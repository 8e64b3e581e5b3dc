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

import celeryconfig
from tasks.broker import BrokerConnection, transport_for


class _AMQP(AMQP):
    """Celery's AMQP with the connection class that names the transport `redis://`."""

    Connection = BrokerConnection


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
