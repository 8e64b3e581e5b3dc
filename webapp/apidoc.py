"""`documented`: the OpenAPI facts of a view, attached to the view itself so they cannot drift."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])

# Errors every authenticated operation may answer (all problem+json).
COMMON_ERRORS = (400, 401, 404, 413, 422)


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    description: str = ""
    location: str = "query"
    required: bool = False


@dataclass(frozen=True)
class OperationDoc:
    summary: str
    tags: tuple[str, ...]
    body: type[BaseModel] | None = None
    responses: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    media: Mapping[int, str] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = COMMON_ERRORS
    auth: bool = True
    deprecated: bool = False
    description: str = ""


def documented(**facts: Any) -> Callable[[F], F]:
    """Attach an OperationDoc to a view; openapi.py turns every such view into an operation."""
    doc = OperationDoc(**facts)

    def attach(view: F) -> F:
        view.__apidoc__ = doc  # type: ignore[attr-defined]
        return view

    return attach


def doc_of(view: Callable[..., Any]) -> OperationDoc | None:
    return getattr(view, "__apidoc__", None)
