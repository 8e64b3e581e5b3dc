"""Every Prometheus metric of Runlane, defined once, for web processes and workers alike.

prometheus_client picks its storage when it is first imported: with PROMETHEUS_MULTIPROC_DIR
set (`runlane up` sets it for every child), each process writes its samples to files in that
folder and any process can serve the sum (gunicorn workers, Celery prefork children). Labels
stay low-cardinality (status, agent, route, kind, event type): never a user or run id.

No Flask or Celery imports here; no server or connection is started at import.
"""
from __future__ import annotations

import fcntl
import glob
import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.registry import Collector

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
EVENTS_PUBLISH_LOST = Counter(
    "runlane_events_publish_lost", "Publishes lost (the event stays in the log), by who "
    "noticed: the publisher (could not send or confirm) or a web process's tail check",
    ["detected_by"])
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


_PID_FILE = re.compile(r"^(?P<kind>[a-z]+)_(?:(?P<mode>[a-z]+)_)?(?P<pid>\d+)\.db$")
_ARCHIVED_KINDS = ("counter", "histogram", "summary")  # cumulative: a dead process's count stays
_LOCK_FILE = ".compaction.lock"


@contextmanager
def _dir_lock(path: str, exclusive: bool) -> Iterator[None]:
    """Scrapes read the folder under a shared lock, compaction rewrites it under an exclusive
    one: a scrape never sees a dead process's samples twice (archived and still in its file)
    nor a file that vanishes while it reads."""
    with open(os.path.join(path, _LOCK_FILE), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _LockedCollector(Collector):
    """prometheus_client's multiprocess collector, reading the folder under the shared lock."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._inner = multiprocess.MultiProcessCollector(None, path=path)

    def collect(self) -> Iterable[Metric]:
        with _dir_lock(self._path, exclusive=False):
            return list(self._inner.collect())


def registry() -> CollectorRegistry:
    """What a scrape should expose: every process's samples in multiprocess mode, else this
    process's default registry."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    reg = CollectorRegistry()
    reg.register(_LockedCollector(path))
    return reg


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process reuses the pid: keep its file for now
    return True


def compact(path: str | None = None) -> int:
    """Fold the sample files of dead processes into one archive file per metric kind and
    delete them; returns how many files it removed.

    Every process of a multiprocess folder writes its own files, named by pid, and they stay
    after it exits so its counts still add up; a folder shared by restarted workers, pool
    children and web workers would grow with each of them. Counters, histograms and
    summaries of dead processes are summed into `<kind>_archive.db` (totals never go down);
    their gauges are dropped, as `mark_process_dead` drops live gauges.
    """
    path = path or multiprocess_dir()
    if path is None or not os.path.isdir(path):
        return 0
    with _dir_lock(path, exclusive=True):
        dead: dict[str, list[str]] = {}
        gauges: list[str] = []
        for file in glob.glob(os.path.join(path, "*.db")):
            found = _PID_FILE.match(os.path.basename(file))
            if found is None or _alive(int(found["pid"])):
                continue
            if found["kind"] in _ARCHIVED_KINDS:
                dead.setdefault(found["kind"], []).append(file)
            else:
                gauges.append(file)
        for kind, files in dead.items():
            archive = os.path.join(path, f"{kind}_archive.db")
            sources = ([archive] if os.path.exists(archive) else []) + files
            merged = multiprocess.MultiProcessCollector.merge(sources, accumulate=False)
            fresh = archive + ".new"
            if os.path.exists(fresh):
                os.unlink(fresh)
            out = MmapedDict(fresh)
            try:
                for metric in merged:
                    for sample in metric.samples:
                        key = json.dumps([metric.name, sample.name, sample.labels,
                                          metric.documentation], sort_keys=True)
                        out.write_value(key, sample.value, 0.0)
            finally:
                out.close()
            os.replace(fresh, archive)
        removed = [f for files in dead.values() for f in files] + gauges
        for file in removed:
            os.unlink(file)
    if removed:
        log.info("metrics folder: folded %d files of dead processes", len(removed))
    return len(removed)


def mark_process_dead(pid: int) -> None:
    """Drop a dead process's live gauges (gunicorn's child_exit, Celery's child shutdown)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


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


def publish_lost(detected_by: str, count: int) -> None:
    if count:
        EVENTS_PUBLISH_LOST.labels(detected_by=detected_by).inc(count)


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
            except Exception:  # a metrics hiccup must not end the thread
                log.warning("socket gauges not refreshed", exc_info=True)


socket_gauges = SocketGauges()
