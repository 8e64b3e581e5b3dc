"""Reading a request safely: JSON bodies, path ids and query numbers, each rejected clearly."""
from __future__ import annotations

import json
import re
import uuid
from typing import Any, TypeVar

from flask import g, request
from pydantic import BaseModel

from factories.context import ID_PATTERN
from runlane.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)
_ID = re.compile(ID_PATTERN)


MAX_DEPTH = 32


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, stopping as soon as it passes `limit`."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def json_body() -> Any:
    """The parsed JSON body; 400 when absent, malformed or nested deeper than MAX_DEPTH."""
    raw = request.get_data(cache=True)
    if not raw:
        raise InvalidInput("a JSON body is required")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput("the body is not valid JSON") from None
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise InvalidInput(f"the body is nested deeper than {MAX_DEPTH} levels")
    return data


def parse_body(model: type[M]) -> M:
    """The body validated by `model` (pydantic errors become 422 problems)."""
    data = json_body()
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object")
    return model.model_validate(data)


def checked_id(value: str, what: str) -> str:
    """A path id, validated before it reaches any query."""
    if not _ID.match(value):
        raise InvalidInput(f"{what} must match {ID_PATTERN}")
    return value


def query_int(name: str, default: int, *, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}")
    return value


def request_id() -> str:
    """The caller's X-Request-ID when it is a sane id, else a new one; echoed on the answer."""
    if "request_id" not in g:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _ID.match(given) else uuid.uuid4().hex
    rid: str = g.request_id
    return rid
