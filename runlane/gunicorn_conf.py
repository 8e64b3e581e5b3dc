"""gunicorn settings for the web process (used by `runlane up` and `runlane web`).

gevent workers: one process holds thousands of idle sockets as greenlets (a threaded worker
would spend two OS threads per socket).
"""
from __future__ import annotations

import os

worker_class = "gevent"
workers = int(os.environ.get("RUNLANE_WEB_WORKERS", "1"))
worker_connections = int(os.environ.get("RUNLANE_WEB_CONNECTIONS", "10000"))
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = "-"
# The default access log line includes the query string; tokens are never put in URLs,
# but keep the format explicit so nobody adds headers to it.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss'
