"""WSGI entry point for gunicorn: `gunicorn webapp.wsgi:app`.

Logging is configured here, not in create_app, because only a served process owns its
logging (tests build many apps in a process whose logging belongs to the test runner). A refusal to
start (schema not at head, bad configuration) ends the process with gunicorn's app-load code.
"""
from __future__ import annotations

import sys

from domain.errors import RunlaneError
from runlane import logs
from runlane.settings import load
from webapp import create_app

# gunicorn's code for "the app failed to load": its master stops with it instead of starting
# a new worker that would fail the same way.
APP_LOAD_ERROR = 4

logs.configure(load())
try:
    app = create_app()
except RunlaneError as exc:  # a configuration the web cannot serve: say why, no traceback
    print(f"runlane web: {exc.detail}", file=sys.stderr, flush=True)
    sys.exit(APP_LOAD_ERROR)
