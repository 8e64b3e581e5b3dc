"""The worker side. `celery -A tasks worker` finds `app` here.

Creating the Celery object opens no connection; config is read on first use.
"""
from __future__ import annotations

from tasks.celery_app import create_celery

app = create_celery()

__all__ = ["app"]
