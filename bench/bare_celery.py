"""The raw floor for the worker-side benchmarks: a bare Celery app configured exactly like
Runlane's (it loads the same `celeryconfig`: json, acks_late, reject on worker lost,
prefetch 1, no result backend, task events), on the same Redis, but on its own queue, with
kombu's stock Redis transport and with tasks that do nothing of Runlane's.

    celery -A bare_celery worker -P prefork -c 1 -Q bare      (run from bench/, ROOT on PYTHONPATH)

`ping` is the round-trip floor: the worker publishes the payload on a Redis channel, which a
subscriber in the benchmark receives (one Redis publish, like Runlane's terminal event).
`noop` is the throughput floor: it records a timestamp only for the first and last of a batch.
"""
from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery, signals

import celeryconfig
from tasks.broker import transport_for

QUEUE = "bare"

# Stock Celery: kombu's own Redis transport, not the one Runlane's config names
# (`tasks/broker.py`, one redis-py client per channel), unless BARE_CELERY_TRANSPORT=runlane
# asks for that comparison.
SETTINGS = celeryconfig.celery_settings()
TRANSPORT = transport_for(SETTINGS["broker_url"]) if os.environ.get(
    "BARE_CELERY_TRANSPORT") == "runlane" else None

app = Celery("bare")
app.config_from_object(SETTINGS)
app.conf.update(task_default_queue=QUEUE, beat_schedule={}, broker_transport=TRANSPORT)


class _Conn:
    """This process's Redis client, built after the fork (never shared with the parent)."""

    client: redis.Redis | None = None


@signals.worker_process_init.connect
def _connect(**_: Any) -> None:
    _Conn.client = redis.Redis.from_url(app.conf.broker_url)


def _redis() -> redis.Redis:
    if _Conn.client is None:  # the solo pool has no worker_process_init
        _Conn.client = redis.Redis.from_url(app.conf.broker_url)
    return _Conn.client


@app.task(name="bare.ping", ignore_result=True)
def ping(channel: str, payload: str) -> None:
    """Publish `payload` on `channel`: the bare round trip a Runlane event rides on."""
    _redis().publish(channel, payload)


@app.task(name="bare.noop", ignore_result=True)
def noop(index: int, total: int, key: str) -> None:
    """Nothing, except stamping the start of the first and the end of the last of a batch."""
    if index == 0:
        _redis().hset(key, "first", repr(time.time()))
    if index == total - 1:
        _redis().hset(key, "last", repr(time.time()))
