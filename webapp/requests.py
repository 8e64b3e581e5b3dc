"""Reading a request safely: JSON bodies, path ids and query numbers, each rejected clearly."""
from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Collection
from typing import Any, TypeVar

from flask import current_app, g, request
from pydantic import BaseModel

from domain.errors import InvalidInput
from domain.ids import ID_PATTERN, is_id
from webapp.apidoc import doc_of

M = TypeVar("M", bound=BaseModel)
# ASCII digits only: int() also takes signs, spaces, underscores and other scripts' digits.
_DIGITS = re.compile(r"[0-9]{1,20}")


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


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: a float too large, which no JSON column stores
        raise ValueError(f"number out of range: {text[:32]}")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's parser accepts NaN and Infinity


def json_body() -> Any:
    """The parsed JSON body; 400 when absent, malformed (NaN, Infinity and numbers too large
    for a float are not JSON a database stores) or nested deeper than MAX_DEPTH."""
    raw = request.get_data(cache=True)
    if not raw:
        raise InvalidInput("a JSON body is required")
    try:
        data = json.loads(raw, parse_float=_finite, parse_constant=_not_json)
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
    if not is_id(value):
        raise InvalidInput(f"{what} must match {ID_PATTERN}")
    return value


def bounded_int(raw: str, what: str, *, low: int, high: int) -> int:
    """A client's decimal number within [low, high]: the range is checked here, at the edge,
    so no database ever sees a number its column cannot hold.

    Raises:
        InvalidInput: not plain ASCII digits, or out of range.
    """
    if not _DIGITS.fullmatch(raw):
        raise InvalidInput(f"{what} must be an integer between {low} and {high}")
    value = int(raw)
    if not low <= value <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}")
    return value


def query_str(name: str) -> str | None:
    """A query parameter given at most once; None when absent.

    Raises:
        InvalidInput: given twice, or given empty.
    """
    values = request.args.getlist(name)
    if len(values) > 1:
        raise InvalidInput(f"{name} must be given at most once")
    if values and values[0] == "":
        raise InvalidInput(f"{name} must not be empty")
    return values[0] if values else None


def query_int(name: str, default: int, *, low: int, high: int) -> int:
    """A query number (see `bounded_int`), or `default` when it is absent."""
    raw = query_str(name)
    return default if raw is None else bounded_int(raw, name, low=low, high=high)


def reject_unknown_query(known: Collection[str]) -> None:
    """Refuse query parameters a route does not read, so a filter that does not exist (say
    `?status=failed`) is not silently ignored.

    Raises:
        InvalidInput: naming the first unknown parameter.
    """
    unknown = sorted(name for name in request.args if name not in known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        name = unknown[0][:64]
        raise InvalidInput(f"unknown query parameter {name!r} (this route takes: {allowed})")


def only_documented_query() -> None:
    """`reject_unknown_query` with the query parameters the route's OpenAPI facts name: what
    is documented is what is read (a blueprint's before_request hook)."""
    view = current_app.view_functions.get(request.endpoint or "")
    doc = doc_of(view) if view is not None else None
    if doc is not None and request.method != "OPTIONS":
        reject_unknown_query({p.name for p in doc.params if p.location == "query"})


def request_id() -> str:
    """The caller's X-Request-ID when it is a sane id, else a new one; echoed on the answer."""
    if "request_id" not in g:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if is_id(given) else uuid.uuid4().hex
    rid: str = g.request_id
    return rid
