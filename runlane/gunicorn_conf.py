"""gunicorn settings for the web process (used by `runlane up` and `runlane web`).

gevent workers: one process holds thousands of idle sockets as greenlets (a threaded worker
would spend two OS threads per socket).
"""
from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from runlane import logs, metrics
from runlane.settings import load

worker_class = "gevent"
workers = int(os.environ.get("RUNLANE_WEB_WORKERS", "1"))
worker_connections = int(os.environ.get("RUNLANE_WEB_CONNECTIONS", "10000"))
timeout = 30
graceful_timeout = 10
keepalive = 5
# The app writes one access line per request itself (runlane.access), carrying request_id,
# user_id and run_id; gunicorn's would be written after the request, without them. It logs
# the path only, never the query string or headers, so no token reaches the log.
accesslog = None


class RunlaneLogger(Logger):
    """gunicorn's own lines (boot, worker exits) in Runlane's format: JSON in production."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        settings = load()
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            logs.adopt(handler, settings)


logger_class = RunlaneLogger


def child_exit(server: Any, worker: Any) -> None:
    """A web worker is gone: its live gauges (sockets, users) must not count any more."""
    metrics.mark_process_dead(worker.pid)
