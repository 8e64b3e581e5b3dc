"""Log configuration: JSON lines in production, readable text in development, and the
request/run/user ids of the work in progress stamped on every record.

The ids live in context variables, so each request (a thread, or a greenlet under gevent) and
each run sees only its own; nothing here keeps per-user state between them. Only ids are ever
added: tokens and agent inputs are never put on a record.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runlane.settings import Settings

FIELDS = ("request_id", "run_id", "user_id")
_VARS: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"runlane_{name}", default=None) for name in FIELDS
}
# A JWT that slipped into a message (an exception text, a URL) is masked, whatever logged it.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(context)s"
# Celery's worker writes a line per task received, succeeded or retried. About a run, they
# carry the task id but neither the user nor the request, and they repeat the worker's own
# `run started` / `run ended` lines, which carry all three.
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")

Tokens = list[tuple[ContextVar[str | None], Token[str | None]]]


def bind(**values: str | None) -> Tokens:
    """Set some of request_id/run_id/user_id for the current context; pass the result to
    `unbind` to restore what was there before."""
    tokens: Tokens = []
    for name, value in values.items():
        var = _VARS[name]  # KeyError on an unknown field: a typo must not pass silently
        tokens.append((var, var.set(value)))
    return tokens


def unbind(tokens: Tokens) -> None:
    for var, token in reversed(tokens):
        try:
            var.reset(token)
        except ValueError:  # set in another context (a thread handed the request over)
            var.set(None)


@contextmanager
def bound(**values: str | None) -> Iterator[None]:
    """The ids for the duration of a block (a run in the worker)."""
    tokens = bind(**values)
    try:
        yield
    finally:
        unbind(tokens)


def current() -> dict[str, str]:
    """The ids set in this context (unset ones omitted)."""
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


class ContextFilter(logging.Filter):
    """Copies the context's ids onto each record (a handler filter, so records propagated
    from any logger get them); ids a caller passed in `extra` win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


def _ids(record: logging.LogRecord) -> dict[str, str]:
    return {name: value for name in FIELDS if (value := getattr(record, name, None)) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the ids, process, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _JWT.sub("[token]", record.getMessage()),
            **_ids(record),
            "process": record.process,
        }
        if record.exc_info:
            line["exc"] = _JWT.sub("[token]", self.formatException(record.exc_info))
        return json.dumps(line, default=str)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`), so text
    a client chose (a path, a header) can never start a line of its own in a text log."""
    return _CONTROL.sub(_escape_char, text)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [request_id=… run_id=… user_id=…]` for development.

    One record is one line: control characters in the message and in every field are
    escaped, and the lines of a traceback are indented under it, so no line a client's
    text produced looks like a record of its own."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        ids = _ids(record)
        context = " ".join(f"{k}={escape_controls(str(v))}" for k, v in ids.items())
        line = TEXT_FORMAT % {
            "asctime": self.formatTime(record, self.datefmt),
            "levelname": escape_controls(record.levelname),
            "name": escape_controls(record.name),
            "message": escape_controls(record.getMessage()),
            "context": f" [{context}]" if context else "",
        }
        extra = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            extra.append(record.exc_text)
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            line += "".join(f"\n    {escape_controls(part)}" for part in block.splitlines())
        return _JWT.sub("[token]", line)


def wants_json(settings: Settings) -> bool:
    if settings.log_format == "auto":
        return settings.env == "production"
    return settings.log_format == "json"


def formatter(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if wants_json(settings) else TextFormatter()


def adopt(handler: logging.Handler, settings: Settings) -> None:
    """Give an existing handler (Celery's, gunicorn's) our format and the ids."""
    handler.setFormatter(formatter(settings))
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())


def quiet_celery_task_lines(settings: Settings) -> None:
    """Celery's per-task lines only at DEBUG; its warnings and errors about tasks still show."""
    if settings.log_level.upper() != "DEBUG":
        for name in CELERY_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


class _RunlaneHandler(logging.StreamHandler[IO[str]]):
    """The handler `configure` installs, marked so that a later call finds and replaces it."""

    _runlane = True


def configure(settings: Settings, *, level: str | int | None = None,
              stream: IO[str] | None = None) -> logging.Handler:
    """Install one stderr handler on the root logger (replacing one installed earlier by this
    function; other handlers, e.g. a test runner's, are left alone)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_runlane", False)]:
        root.removeHandler(old)
    handler = _RunlaneHandler(stream or sys.stderr)
    adopt(handler, settings)
    root.addHandler(handler)
    root.setLevel(level if level is not None else settings.log_level.upper())
    return handler
