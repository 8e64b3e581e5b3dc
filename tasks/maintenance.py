"""Periodic upkeep, scheduled by Celery beat (see `beat_schedule` in celeryconfig.py)."""
from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task

from tasks import worker

log = logging.getLogger(__name__)


@shared_task(name="runlane.purge_events", ignore_result=True)
def purge_events() -> int:
    """Delete events older than the retention; clients asking for them get resync_required."""
    runtime = worker.current()
    removed = runtime.events.purge(timedelta(days=runtime.settings.event_retention_days))
    log.info("purged %d events older than %s days", removed, runtime.settings.event_retention_days)
    return removed
