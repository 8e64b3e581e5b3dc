"""The words every room shares: run statuses, event types, identifiers, the user context and
the error tree.

A leaf: it imports nothing of Runlane, so the web, the worker, the CLI and the client-facing
code can all depend on it without depending on each other (docs/architecture.md, "Who imports
whom"). Nothing here knows HTTP, Celery, Redis or SQL.
"""
