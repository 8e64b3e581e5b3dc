"""Celery settings, derived from runlane.settings (the environment) when Celery first reads them.

Reliability choices, and why:
- task_acks_late + task_reject_on_worker_lost: a message is acknowledged only after the run
  finished, so a worker that dies mid-run leaves it to be redelivered (the run claim in the
  database makes a duplicate delivery a no-op).
- worker_prefetch_multiplier = 1: a worker holds no more runs than it executes, so a busy
  worker does not sit on queued runs that an idle one could take.
- visibility_timeout: with the Redis broker an unacknowledged message comes back after this
  long; it must be longer than any run's hard time limit or a slow run would be redelivered
  while still running.
- broker_transport is not set here: Runlane's app (tasks/celery_app.py) picks its own Redis
  transport (`tasks/broker.py`, one redis-py client per channel; kombu's builds a client for
  every message, event and ack sent) when it loads these settings. This module imports
  nothing of the worker, so the worker's modules can import it without a cycle.
- json only: the message carries one signed string, never a pickled object.
- worker_send_task_events: Flower (`celery -A tasks flower`) sees every task a worker
  receives, starts and finishes. task_send_sent_event stays off: it would make every
  submission publish one more Redis message before answering, on the path to its `202`
  (docs/benchmarks.md), for a "sent" state Flower does not need (it shows tasks from
  "received" on).
- beat_schedule: the event-log purge runs hourly; `runlane up` embeds beat in its worker
  (`-B`), a fleet runs exactly one `celery -A tasks beat`.

Nothing is read when this module is imported, and it has no setting at module level. It is
installed as a top-level `celeryconfig`, the module Celery's *default* app imports in every
folder: another project's `celery --broker=... inspect ping` or `celery flower` (no `-A`)
imports it and must neither fail (a missing REDIS_URL used to raise here) nor silently get
Runlane's broker, transport and queues. Only Runlane's app asks for the settings, by calling
`celery_settings()` (tasks/celery_app.py); a missing REDIS_URL is reported when a Runlane
worker or web process starts, which needs it.
"""
from __future__ import annotations

from typing import Any


def celery_settings() -> dict[str, Any]:
    """Runlane's Celery settings from the environment (read now, not on import).

    broker_url is None while REDIS_URL is unset: Runlane's processes refuse to start without
    it, with a message, before they would connect.
    """
    from runlane.settings import load  # noqa: PLC0415 - nothing is read on import

    return {
        "broker_url": load().redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": 3600},
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A lost broker connection must not cancel running runs: their state is in the
        # database and a redelivered copy is dropped by the claim.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "runlane",
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "beat_schedule": {
            "purge-events": {"task": "runlane.purge_events", "schedule": 3600.0},
        },
    }
