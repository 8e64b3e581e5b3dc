"""Every Prometheus metric of Runlane, defined once, for web processes and workers alike.

prometheus_client picks its storage when it is first imported: with PROMETHEUS_MULTIPROC_DIR
set (`runlane up` sets it for every child), each process writes its samples to files in that
folder and any process can serve the sum (gunicorn workers, Celery prefork children). Labels
stay low-cardinality (status, agent, route, kind, event type): never a user or run id.

No Flask or Celery imports here; no server or connection is started at import.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RUNS = Counter(
    "runlane_runs", "Runs entering a status (queued at submission, running at claim, "
    "retrying when a worker was lost, and each terminal status)", ["status", "agent"])
QUEUE_WAIT = Histogram(
    "runlane_run_queue_wait_seconds", "Submission to first claim by a worker", ["agent"],
    buckets=_SECONDS)
RUN_DURATION = Histogram(
    "runlane_run_duration_seconds", "Claim to end of one attempt, by how it ended",
    ["agent", "status"], buckets=_SECONDS)
FACTORY_BUILD = Histogram(
    "runlane_factory_build_seconds", "Time a factory took to build a run's object",
    ["factory"], buckets=_FAST)
EVENTS_PUBLISHED = Counter(
    "runlane_events_published", "Events published on a user's channel (after being logged)",
    ["type"])
EVENT_PUBLISH_FAILURES = Counter(
    "runlane_event_publish_failures", "Publishes that failed (the event stays in the log)",
    ["type"])
EVENTS_DELIVERED = Counter(
    "runlane_events_delivered", "Live events handed to a socket's queue (one per socket)",
    ["type"])
EVENTS_DROPPED = Counter(
    "runlane_events_dropped", "Live events refused by a full or closed socket queue (the "
    "socket is cut and its client resumes from the log)", ["type"])
DELIVERY_LATENCY = Histogram(
    "runlane_event_delivery_latency_seconds",
    "Event timestamp (logged by the worker) to hand-off to the sockets of a web process",
    buckets=_FAST)
CONNECTED_SOCKETS = Gauge(
    "runlane_connected_sockets", "Event sockets attached to a web process's router",
    multiprocess_mode="livesum")
SUBSCRIBED_USERS = Gauge(
    "runlane_subscribed_users", "Users with at least one socket, counted per web process",
    multiprocess_mode="livesum")
V1_CALLS = Counter("runlane_v1_calls", "Calls of a legacy v1 route", ["route"])
RATE_LIMITED = Counter(
    "runlane_rate_limited", "Requests refused by a per-user rate limit", ["kind"])


def multiprocess_dir() -> str | None:
    """The shared sample folder when this process runs in multiprocess mode."""
    return os.environ.get(MULTIPROC_ENV) or None


def registry() -> CollectorRegistry:
    """What a scrape should expose: every process's samples in multiprocess mode, else this
    process's default registry."""
    if multiprocess_dir() is None:
        return REGISTRY
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
    return reg


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (gunicorn's child_exit, Celery's child shutdown)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def start_exporter(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - a scrape target
    """Serve /metrics on `port` from a worker's main process (for workers on their own hosts)."""
    if multiprocess_dir() is None:
        log.warning("%s is unset: the worker exporter shows its main process only, not its "
                    "prefork children", MULTIPROC_ENV)
    start_http_server(port, addr=addr, registry=registry())
    log.info("worker metrics on http://%s:%d/metrics", addr, port)


# -- hooks called from the hot paths: one dict lookup and one increment each ----------------

def run_status(status: str, agent: str | None) -> None:
    RUNS.labels(status=status, agent=agent or "unknown").inc()


def published(event_type: str, ok: bool) -> None:
    (EVENTS_PUBLISHED if ok else EVENT_PUBLISH_FAILURES).labels(type=event_type).inc()


def delivered(message: Mapping[str, Any], accepted: int, refused: int = 0) -> None:
    """One live event handed to `accepted` sockets of this process (and refused by `refused`)."""
    if not isinstance(message, Mapping):
        return
    event_type = str(message.get("type", "unknown"))
    if accepted:
        EVENTS_DELIVERED.labels(type=event_type).inc(accepted)
    if refused:
        EVENTS_DROPPED.labels(type=event_type).inc(refused)
    ts = message.get("ts")
    if accepted and isinstance(ts, str):
        try:
            sent = datetime.fromisoformat(ts).timestamp()
        except ValueError:
            return
        DELIVERY_LATENCY.observe(max(0.0, time.time() - sent))  # hosts' clocks may disagree


# -- socket gauges: read from the routers' own tables, never per socket ---------------------

class _Stats(Protocol):
    def stats(self) -> dict[str, int]: ...


class SocketGauges:
    """Keeps the socket gauges equal to the sum of this process's routers' tables.

    Refreshed when this process serves a scrape, and (multiprocess mode) every `interval`
    seconds by one daemon thread, so the other web processes' files stay current too.
    """

    def __init__(self, interval: float = 5.0) -> None:
        self._routers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._interval = interval
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def track(self, router: _Stats) -> None:
        with self._lock:
            self._routers.add(router)
            if self._thread is None and multiprocess_dir() is not None:
                self._thread = threading.Thread(target=self._refresh_forever,
                                                name="runlane-metrics", daemon=True)
                self._thread.start()

    def refresh(self) -> None:
        users = sockets = 0
        for router in list(self._routers):
            stats = router.stats()
            users += stats.get("users", 0)
            sockets += stats.get("sockets", 0)
        SUBSCRIBED_USERS.set(users)
        CONNECTED_SOCKETS.set(sockets)

    def _refresh_forever(self) -> None:
        while True:
            time.sleep(self._interval)
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a metrics hiccup must not end the thread
                log.warning("socket gauges not refreshed", exc_info=True)


socket_gauges = SocketGauges()
