"""The engine's interface: what the code that builds an engine (factories/) and the code that
implements and runs it (tasks/) both need to agree on.

It sits below both so that neither has to import the other for it: tasks/ uses factories/,
so a factories module importing tasks/ for a type would close an import cycle. It imports
nothing of Runlane and no framework.
"""
from __future__ import annotations

from typing import Protocol


class Control(Protocol):
    """One attempt's cooperative checks. The engine calls `check()` before every step of the
    agent; it returns while the run may go on and raises (cancelled, timed out) to stop it,
    so the agent is only ever interrupted between steps."""

    def check(self) -> None: ...


__all__ = ["Control"]
