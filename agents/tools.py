"""Tools agents may call; each is a plain function over JSON arguments."""
from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos,
}


class ToolError(ValueError):
    """A tool was called with arguments it cannot work with."""


MAX_MAGNITUDE = 10**100  # bounds every intermediate result, so no expression can hang a worker


def _bounded(value: Any) -> Any:
    if abs(value) > MAX_MAGNITUDE:
        raise ToolError("result too large")
    return value


def calculate(expression: str) -> float | int:
    """Evaluate arithmetic (+ - * / // % ** and parentheses) without `eval`."""
    if len(expression) > 200:
        raise ToolError("expression too long")

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow):
                # Checked before computing: |left| ** right must stay within MAX_MAGNITUDE.
                if abs(right) > 64 or (abs(left) > 1 and right > 0
                                       and right * math.log10(abs(left)) > 100):
                    raise ToolError("exponent too large")
            return _bounded(_OPS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ToolError(f"unsupported expression: {expression!r}")

    try:
        return walk(ast.parse(expression, mode="eval"))  # type: ignore[no-any-return]
    except (SyntaxError, ArithmeticError, ValueError) as exc:
        raise ToolError(str(exc) or type(exc).__name__) from None


def word_count(text: str) -> dict[str, int]:
    return {"words": len(text.split()), "characters": len(text)}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    function: Callable[..., Any]


def default_tools() -> Mapping[str, Tool]:
    """A fresh name → tool map of the built-in tools."""
    tools = [
        Tool("calculator", "Evaluates an arithmetic expression", calculate),
        Tool("word_count", "Counts the words and characters of a text", word_count),
    ]
    return {tool.name: tool for tool in tools}
