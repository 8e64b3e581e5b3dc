"""gunicorn settings for the web process (used by `runlane up` and `runlane web`).

gevent workers: one process holds thousands of idle sockets as greenlets (a threaded worker
would spend two OS threads per socket).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger

from runlane import logs, metrics
from runlane.settings import load

worker_class = "runlane.gunicorn_worker.RunlaneGeventWorker"
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


# A unix socket's path must fit in sun_path (104 bytes on macOS, 108 on Linux).
_MAX_SOCKET_PATH = 100


def control_socket_path(instance: Path, bind: str) -> Path | None:
    """This web process's own gunicorn control socket, named by the address it serves.

    gunicorn's default is one path per user (`$XDG_RUNTIME_DIR/gunicorn.ctl` or
    `~/.gunicorn/gunicorn.ctl`): every web process of the host would bind the same socket and
    the first one to stop would delete it for the others. None when the path would not fit.
    """
    name = "web-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in bind) + ".ctl"
    path = instance.resolve() / "run" / name
    return path if len(str(path)) <= _MAX_SOCKET_PATH else None


def on_starting(server: Any) -> None:
    # gunicorn put its working folder first on sys.path; the workers import the app after
    # forking, so without it a project's own `tasks.py` or `events.py` there cannot stand in
    # for Runlane's modules (`runlane web` starts Python with -P, which adds no folder).
    while server.cfg.chdir in sys.path:
        sys.path.remove(server.cfg.chdir)
    path = control_socket_path(load().instance_path, str(server.cfg.bind[0]))
    try:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = None
    if path is None:
        server.cfg.set("control_socket_disable", True)
        server.log.info("control socket disabled: no short, writable path in the instance "
                        "folder for it")
        return
    server.cfg.set("control_socket", str(path))


def child_exit(server: Any, worker: Any) -> None:
    """A web worker is gone: its live gauges (sockets, users) must not count any more, and
    its sample files are folded into the archive so the folder stays bounded."""
    metrics.mark_process_dead(worker.pid)
    try:
        metrics.compact()
    except OSError:
        server.log.warning("metrics folder not compacted", exc_info=True)
