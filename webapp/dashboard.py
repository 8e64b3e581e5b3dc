"""The dashboard at `/`: one HTML page and a few static ES modules that speak only the public
v2 API and the v2 socket, so it proves the API is enough for a real client.

No build step and no CDN: the files under webapp/static/dashboard.* are served as they are.
"""
from __future__ import annotations

import re
from pathlib import Path

from flask import (
    Blueprint,
    Response,
    abort,
    render_template,
    request,
    send_from_directory,
)

from webapp.apidoc import documented

bp = Blueprint("dashboard", __name__, template_folder="templates")
_STATIC = Path(__file__).with_name("static")
_PREFIX = "dashboard."  # only the dashboard's own files are reachable through its asset route
ICON = "dashboard.icon.svg"
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


@bp.get("/")
@documented(summary="The dashboard (a browser page; signs in with a pasted token)",
            tags=("meta",), auth=False, errors=(), responses={200: None},
            media={200: "text/html"})
def page() -> str:
    return render_template("dashboard.html")


@bp.get("/favicon.ico")
@documented(summary="The site icon (browsers ask for it on every page)", tags=("meta",),
            auth=False, errors=(), responses={200: None}, media={200: "image/svg+xml"})
def favicon() -> Response:
    response = send_from_directory(_STATIC, ICON, mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@bp.get("/dashboard/assets/<filename>")
@documented(summary="Scripts and styles of the dashboard", tags=("meta",), auth=False,
            errors=(404,), responses={200: None}, media={200: "text/javascript, text/css"})
def assets(filename: str) -> Response:
    if not filename.startswith(_PREFIX):
        abort(404)
    response = send_from_directory(_STATIC, filename)
    response.headers["Cache-Control"] = "no-cache"  # revalidate: the files change with the code
    return response


@bp.after_request
def _page_headers(response: Response) -> Response:
    """A strict policy: scripts and styles only from files here, connections only to this origin
    (websocket schemes named too, for browsers whose 'self' does not cover ws:/wss:)."""
    host = request.host
    sockets = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""  # never echo odd Hosts
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
