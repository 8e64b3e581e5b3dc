"""A run's statuses and the moves between them, as data.

`TRANSITIONS` is the whole state machine: storage/runstate.py, the one module that writes a
run's status, refuses any change not listed here, and tests/unit/test_runstate.py checks every
pair of statuses against it.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping


class RunStatus(str, enum.Enum):
    """queued → running → completed | failed | cancelled | timed_out; running → cancelling;
    a run whose worker was lost goes running → retrying → running (attempt + 1)."""

    QUEUED = "queued"
    RETRYING = "retrying"
    RUNNING = "running"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED,
                      RunStatus.TIMED_OUT})
WAITING = frozenset({RunStatus.QUEUED, RunStatus.RETRYING})  # may be claimed by a worker
EXECUTING = frozenset({RunStatus.RUNNING, RunStatus.CANCELLING})  # a worker holds the lease
ACTIVE = WAITING | EXECUTING


# Every allowed change. A terminal status has none; nothing returns to `queued`.
# - waiting → running: a worker's claim (attempt + 1); → cancelled: its owner cancels;
#   → failed: never started within the queue age, or a forged message named it.
# - running → cancelling: its owner cancels (the agent stops at its next step);
#   → retrying: its worker was lost (lease lapsed) and attempts are left;
#   → completed | failed | cancelled | timed_out: the agent's end, or the watchdog's.
# - cancelling never goes back to running or retrying: a cancel asked for is a cancel kept;
#   the agent may still finish first (completed, failed) or run out of time (timed_out).
TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.RETRYING: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset({
        RunStatus.CANCELLING, RunStatus.RETRYING, RunStatus.COMPLETED, RunStatus.FAILED,
        RunStatus.CANCELLED, RunStatus.TIMED_OUT}),
    RunStatus.CANCELLING: frozenset({
        RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT}),
    **{status: frozenset() for status in TERMINAL},
}


def sources(to: RunStatus) -> frozenset[RunStatus]:
    """Every status a run may move to `to` from."""
    return frozenset(status for status, targets in TRANSITIONS.items() if to in targets)
