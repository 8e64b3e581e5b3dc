"""Event types and the envelope every client receives."""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class EventType(str, enum.Enum):
    AGENT_STARTED = "agent_started"
    AGENT_THINKING = "agent_thinking"
    TOOL_EXECUTING = "tool_executing"
    TOOL_COMPLETED = "tool_completed"
    AGENT_COMPLETED = "agent_completed"
    AGENT_FAILED = "agent_failed"
    AGENT_CANCELLED = "agent_cancelled"
    AGENT_TIMED_OUT = "agent_timed_out"

    @property
    def terminal(self) -> bool:
        return self.value in TERMINAL_TYPES


TERMINAL_TYPES = frozenset(
    {"agent_completed", "agent_failed", "agent_cancelled", "agent_timed_out"})


@dataclass(frozen=True, slots=True)
class Event:
    """One numbered event of one run. `seq` counts per run from 1; `cursor` per user."""

    type: str
    run_id: str
    thread_id: str
    seq: int
    cursor: int
    ts: datetime
    data: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "run_id": self.run_id,
            "thread_id": self.thread_id,
            "seq": self.seq,
            "cursor": self.cursor,
            "ts": self.ts.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }

    def encode(self) -> str:
        """The JSON text published on the channel and sent, unchanged, to sockets."""
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str)


# The largest `seq` and per-user `cursor` the event log can hold on every supported database
# (storage/models.py: `seq` is an INTEGER, int32 on PostgreSQL; `cursor` a BIGINT). A client
# position past these is refused at the edge instead of failing in the database.
MAX_SEQ = 2**31 - 1
MAX_CURSOR = 2**63 - 1
