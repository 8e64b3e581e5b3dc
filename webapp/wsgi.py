"""WSGI entry point for gunicorn: `gunicorn webapp.wsgi:app`.

Logging is configured here, not in create_app, because only a served process owns its
logging (tests build many apps in a process whose logging belongs to the test runner).
"""
from __future__ import annotations

from runlane import logs
from runlane.settings import load
from webapp import create_app

logs.configure(load())
app = create_app()
