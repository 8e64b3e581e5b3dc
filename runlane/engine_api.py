"""The engine's interface: what the code that builds an engine (factories/) and the code that
implements and runs it (tasks/) both need to agree on.

It sits below both so that neither has to import the other for it: tasks/ uses factories/,
so a factories module importing tasks/ for a type would close an import cycle. It imports
only the domain's words and no framework.
"""
from __future__ import annotations

from typing import Any, Protocol

from domain.events import Event
from domain.status import RunStatus


class Control(Protocol):
    """One attempt's hold on its run. The engine calls `check()` before every step of the
    agent; it returns while the run may go on and raises (cancelled, timed out) to stop it,
    so the agent is only ever interrupted between steps. `finish` records the run's end and
    publishes its terminal event: the engine never writes a run's state itself."""

    def check(self) -> None: ...

    def finish(self, to: RunStatus, *, event_type: str, data: Any,
               **values: Any) -> Event | None:
        """The terminal state and its event, in one transaction; None when this attempt no
        longer holds the run (nothing was written)."""
        ...


__all__ = ["Control"]
