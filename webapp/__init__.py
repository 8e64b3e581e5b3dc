"""The web process. Importing this package loads nothing: create_app() (webapp/app.py) loads
the app's modules when it is called, so that `import webapp.auth` (a token check, the
`runlane token` command) brings neither the database nor Celery with it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Settings from the environment, then `overrides` (Settings field names); see
    webapp.app.create_app."""
    from webapp.app import create_app as build  # noqa: PLC0415 - the package stays light

    return build(overrides)
