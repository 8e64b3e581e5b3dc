"""create_celery(): the one Celery app, configured from `celeryconfig` (lazily, on first use)."""
from __future__ import annotations

from celery import Celery


def create_celery() -> Celery:
    app = Celery("runlane", include=["tasks.run", "tasks.maintenance"])
    app.config_from_object("celeryconfig")
    app.set_default()
    return app
