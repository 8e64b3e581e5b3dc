"""Prebuilt Core statements of the per-run hot path: claim, event numbering, status reads.

Every run makes these a few times, so they are built once, at import: a statement object
memoizes its cache key, so executing a prebuilt one skips constructing and hashing it (about
40 µs each), and statements on the Table rather than the ORM entity skip the ORM's DML
handling (about 100 µs per UPDATE). They are constants holding no data; values arrive as
`b_*` parameters at execution, and each one's WHERE clause names the owner.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.models import (
    ACTIVE,
    EXECUTING,
    WAITING,
    EventRecord,
    Run,
    RunStatus,
    Thread,
    UserStream,
)

RUNS: Table = Run.__table__  # type: ignore[assignment]
STREAMS: Table = UserStream.__table__  # type: ignore[assignment]
EVENTS: Table = EventRecord.__table__  # type: ignore[assignment]
THREADS: Table = Thread.__table__  # type: ignore[assignment]


def _values(statuses: frozenset[RunStatus]) -> list[str]:
    return sorted(s.value for s in statuses)


def _owned_run() -> Any:
    return and_(RUNS.c.owner_id == bindparam("b_owner"), RUNS.c.id == bindparam("b_run"))


def _per_dialect(build: Any) -> dict[str, Any]:
    return {"sqlite": build(sqlite.insert), "postgresql": build(postgresql.insert)}


# The owner's stream row, created on first use; the no-op update takes its row lock
# (PostgreSQL) or the write lock (SQLite) until the transaction ends: claims serialise per user.
LOCK_USER = _per_dialect(lambda ins: ins(STREAMS).values(
    owner_id=bindparam("b_owner"), last_cursor=0,
).on_conflict_do_update(index_elements=[STREAMS.c.owner_id],
                        set_={"last_cursor": STREAMS.c.last_cursor}))

# The owner's next cursor, in one statement whether or not the row exists yet.
NEXT_CURSOR = _per_dialect(lambda ins: ins(STREAMS).values(
    owner_id=bindparam("b_owner"), last_cursor=1,
).on_conflict_do_update(index_elements=[STREAMS.c.owner_id],
                        set_={"last_cursor": STREAMS.c.last_cursor + 1},
                        ).returning(STREAMS.c.last_cursor))

CLAIM_READ = select(RUNS.c.status, RUNS.c.dispatch, RUNS.c.attempt, RUNS.c.thread_id,
                    RUNS.c.created_at).where(_owned_run())

_created = bindparam("b_created", type_=RUNS.c.created_at.type)
# Both counts a claim needs, each an index range (owner+status, owner+thread+status).
CLAIM_COUNTS = select(
    select(func.count()).where(
        RUNS.c.owner_id == bindparam("b_owner"), RUNS.c.status.in_(_values(EXECUTING)),
    ).scalar_subquery(),
    select(func.count()).where(
        RUNS.c.owner_id == bindparam("b_owner"), RUNS.c.thread_id == bindparam("b_thread"),
        RUNS.c.id != bindparam("b_run"), RUNS.c.status.in_(_values(ACTIVE)),
        or_(  # executing, or waiting since before this run
            RUNS.c.status.in_(_values(EXECUTING)),
            RUNS.c.created_at < _created,
            and_(RUNS.c.created_at == _created, RUNS.c.id < bindparam("b_run")),
        ),
    ).scalar_subquery(),
)

MARK_BLOCKED = update(RUNS).where(_owned_run()).values(blocked_at=bindparam("b_now"))

CLAIM = update(RUNS).where(
    _owned_run(), RUNS.c.status.in_(_values(WAITING)), RUNS.c.attempt == bindparam("b_prev"),
).values(status=RunStatus.RUNNING.value, attempt=bindparam("b_attempt"),
         started_at=bindparam("b_now"), lease_expires_at=bindparam("b_lease"),
         deadline_at=bindparam("b_deadline"), blocked_at=None)

NEXT_SEQ = update(RUNS).where(_owned_run()).values(
    last_seq=RUNS.c.last_seq + 1).returning(RUNS.c.last_seq)
# The same, for a worker's attempt: only while that attempt holds the run.
NEXT_SEQ_OF_ATTEMPT = update(RUNS).where(
    _owned_run(), RUNS.c.attempt == bindparam("b_attempt"),
    RUNS.c.status.in_(_values(EXECUTING)),
).values(last_seq=RUNS.c.last_seq + 1).returning(RUNS.c.last_seq)

INSERT_EVENT = insert(EVENTS)

NEXT_BLOCKED = select(RUNS.c.id).where(
    RUNS.c.owner_id == bindparam("b_owner"), RUNS.c.status.in_(_values(WAITING)),
    RUNS.c.blocked_at.is_not(None),
).order_by(RUNS.c.created_at, RUNS.c.id).limit(bindparam("b_limit", type_=Integer()))


@lru_cache(maxsize=64)
def transition(from_values: tuple[str, ...], with_attempt: bool, with_lease: bool,
               columns: tuple[str, ...]) -> Any:
    """The conditional status change of one call shape (few exist: engine end, cancel,
    reaper, watchdog), built once; values arrive as `v_<column>`, the conditions as `b_*`."""
    stmt = update(RUNS).where(_owned_run(), RUNS.c.status.in_(list(from_values)))
    if with_attempt:
        stmt = stmt.where(RUNS.c.attempt == bindparam("b_attempt"))
    if with_lease:
        stmt = stmt.where(RUNS.c.lease_expires_at < bindparam("b_lease_before",
                                                               type_=RUNS.c.lease_expires_at.type))
    return stmt.values({RUNS.c[name]: bindparam(f"v_{name}", type_=RUNS.c[name].type)
                        for name in columns})


COUNT_WAITING = select(func.count()).where(
    RUNS.c.owner_id == bindparam("b_owner"), RUNS.c.status.in_(_values(WAITING)))

ACTIVE_IN_THREAD = select(RUNS.c.id).where(
    RUNS.c.owner_id == bindparam("b_owner"), RUNS.c.thread_id == bindparam("b_thread"),
    RUNS.c.status.in_(_values(ACTIVE)),
).order_by(RUNS.c.created_at)

# The owner's thread, created on first use (another owner's same id is another thread).
ENSURE_THREAD = {name: stmt.on_conflict_do_nothing() for name, stmt in _per_dialect(
    lambda ins: ins(THREADS).values(owner_id=bindparam("b_owner"), id=bindparam("b_thread"),
                                    created_at=bindparam("b_now"))).items()}

INSERT_RUN = insert(RUNS)

RUN_STATUS = select(RUNS.c.status).where(_owned_run(), RUNS.c.attempt == bindparam("b_attempt"))
