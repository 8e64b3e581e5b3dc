"""Built-in agents: `echo` for plumbing checks and benchmarks, `demo` for a realistic event flow."""
from __future__ import annotations

import time
from typing import Any, ClassVar

from agents.base import Agent, AgentError, RunContext


class EchoAgent(Agent):
    name = "echo"
    description = "Returns its input unchanged."
    input_schema: ClassVar[dict[str, Any]] = {"description": "Any JSON value."}

    def run(self, ctx: RunContext) -> Any:
        return ctx.input


class DemoAgent(Agent):
    name = "demo"
    description = (
        "Thinks, calls a calculator or word-count tool at each step and returns a summary; "
        "`fail_at` makes it fail at that step."
    )
    input_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 20, "default": 3},
            "delay_ms": {"type": "integer", "minimum": 0, "maximum": 5000, "default": 0},
            "fail_at": {"type": "integer", "minimum": 1},
            "text": {"type": "string", "maxLength": 10000},
            "stubborn": {
                "type": "boolean", "default": False,
                "description": "sleep through delays ignoring time-limit signals, like a stuck "
                               "agent (to try cancellation grace and hard limits)",
            },
        },
        "additionalProperties": False,
    }

    @classmethod
    def input_from_text(cls, text: str) -> Any:
        return {"text": text}

    def run(self, ctx: RunContext) -> Any:
        args = ctx.input or {}
        steps = int(args.get("steps", 3))
        delay = int(args.get("delay_ms", 0)) / 1000.0
        fail_at = args.get("fail_at")
        text = args.get("text", "the quick brown fox jumps over the lazy dog")
        nap = _stubborn_sleep if args.get("stubborn") else time.sleep
        results: list[Any] = []
        for step in range(1, steps + 1):
            if step == fail_at:
                raise AgentError(f"demo failed at step {step} as asked")
            if step % 2:
                ctx.think(f"Step {step}: computing {step} squared plus one")
                results.append(ctx.call_tool("calculator", expression=f"{step}**2+1"))
            else:
                ctx.think(f"Step {step}: counting the words of the text")
                results.append(ctx.call_tool("word_count", text=text)["words"])
            if delay:
                nap(delay)
        return {"steps": steps, "results": results, "summary": f"completed {steps} steps"}


def _stubborn_sleep(seconds: float) -> None:
    """Sleep the whole time even when a soft time limit is raised into it."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except Exception:  # noqa: BLE001 - ignoring signals is the point
            continue
