"""Prebuilt statements of the per-run hot path: submission, claim, event numbering, status
changes and reads.

Every run makes these a few times, so they are built once, at import, on the Table rather
than the ORM entity (no ORM DML handling), and wrapped in `Prepared`, which compiles each
once per dialect and runs it on the driver's cursor (storage/prepared.py says why). They are
constants holding no data; values arrive as `b_*` (conditions) and `v_*` (column values)
parameters at execution, and each one's WHERE clause names the owner.
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Integer,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from domain.status import ACTIVE, EXECUTING, WAITING, RunStatus
from storage.models import EventRecord, Run, Thread, UserStream
from storage.prepared import Prepared

RUNS: Table = Run.__table__  # type: ignore[assignment]
STREAMS: Table = UserStream.__table__  # type: ignore[assignment]
EVENTS: Table = EventRecord.__table__  # type: ignore[assignment]
THREADS: Table = Thread.__table__  # type: ignore[assignment]


def _values(statuses: frozenset[RunStatus]) -> list[str]:
    return sorted(s.value for s in statuses)


def _status_in(values: Iterable[str], runs: Any = RUNS) -> Any:
    """`runs.status IN (...)` with one plain bound value per status. `in_()` of a list would
    make an "expanding" parameter that SQLAlchemy re-renders into the SQL on every execution
    (a cost on each hot statement; docs/benchmarks.md); these statuses are constants, so the
    SQL can be compiled once."""
    return runs.c.status.in_([literal(v, RUNS.c.status.type) for v in values])


def _owned_run() -> Any:
    return and_(RUNS.c.owner_id == bindparam("b_owner"), RUNS.c.id == bindparam("b_run"))


def _per_dialect(build: Any) -> dict[str, Any]:
    return {"sqlite": build(sqlite.insert), "postgresql": build(postgresql.insert)}


# The owner's stream row, created on first use; the no-op update takes its row lock
# (PostgreSQL) or the write lock (SQLite) until the transaction ends: claims serialise per user.
LOCK_USER = Prepared(_per_dialect(lambda ins: ins(STREAMS).values(
    owner_id=bindparam("b_owner"), last_cursor=0,
).on_conflict_do_update(index_elements=[STREAMS.c.owner_id],
                        set_={"last_cursor": STREAMS.c.last_cursor})))

# The owner's next cursor, in one statement whether or not the row exists yet. Like LOCK_USER
# it holds the owner's row lock (PostgreSQL) or the write lock (SQLite) to the end of the
# transaction, so cursors are handed out in commit order.
NEXT_CURSOR = Prepared(_per_dialect(lambda ins: ins(STREAMS).values(
    owner_id=bindparam("b_owner"), last_cursor=1,
).on_conflict_do_update(index_elements=[STREAMS.c.owner_id],
                        set_={"last_cursor": STREAMS.c.last_cursor + 1},
                        ).returning(STREAMS.c.last_cursor)))

CLAIM_READ = Prepared(select(RUNS.c.status, RUNS.c.dispatch, RUNS.c.attempt, RUNS.c.thread_id,
                    RUNS.c.created_at).where(_owned_run()))

_created = bindparam("b_created", type_=RUNS.c.created_at.type)
# Both counts a claim needs, each an index range (owner+status, owner+thread+status).
CLAIM_COUNTS = Prepared(select(
    select(func.count()).where(
        RUNS.c.owner_id == bindparam("b_owner"), _status_in(_values(EXECUTING)),
    ).scalar_subquery(),
    select(func.count()).where(
        RUNS.c.owner_id == bindparam("b_owner"), RUNS.c.thread_id == bindparam("b_thread"),
        RUNS.c.id != bindparam("b_run"), _status_in(_values(ACTIVE)),
        or_(  # executing, or waiting since before this run
            _status_in(_values(EXECUTING)),
            RUNS.c.created_at < _created,
            and_(RUNS.c.created_at == _created, RUNS.c.id < bindparam("b_run")),
        ),
    ).scalar_subquery(),
))

MARK_BLOCKED = Prepared(update(RUNS).where(_owned_run()).values(blocked_at=bindparam("b_now")))

_CLAIM = update(RUNS).where(
    _owned_run(), _status_in(_values(WAITING)), RUNS.c.attempt == bindparam("b_prev"),
).values(status=RunStatus.RUNNING.value, attempt=bindparam("b_attempt"),
         started_at=bindparam("b_now"), lease_expires_at=bindparam("b_lease"),
         deadline_at=bindparam("b_deadline"), blocked_at=None)

# The claim that also numbers the run's first event (logged in the same transaction): one
# UPDATE where a claim and then NEXT_SEQ_OF_ATTEMPT would be two.
CLAIM_NUMBERED = Prepared(
    _CLAIM.values(last_seq=RUNS.c.last_seq + 1).returning(RUNS.c.last_seq))

# The whole claim as one statement, for the common case: the run waits under this dispatch
# token, its owner runs fewer than `b_max` runs, and nothing of its thread runs or waits
# ahead of it. It numbers the first event too and returns (attempt, seq); no row back means
# "not in the common case", and the caller takes the step-by-step claim to learn why.
_OTHER = RUNS.alias("other")
CLAIM_IF_FREE = Prepared(update(RUNS).where(
    _owned_run(), _status_in(_values(WAITING)), RUNS.c.dispatch == bindparam("b_dispatch"),
    select(func.count()).where(
        _OTHER.c.owner_id == bindparam("b_owner"),
        _status_in(_values(EXECUTING), _OTHER),
    ).scalar_subquery() < bindparam("b_max", type_=Integer()),
    ~exists().where(
        _OTHER.c.owner_id == bindparam("b_owner"), _OTHER.c.thread_id == RUNS.c.thread_id,
        _OTHER.c.id != RUNS.c.id,
        _status_in(_values(ACTIVE), _OTHER),
        or_(_status_in(_values(EXECUTING), _OTHER),
            _OTHER.c.created_at < RUNS.c.created_at,
            and_(_OTHER.c.created_at == RUNS.c.created_at, _OTHER.c.id < RUNS.c.id)),
    ),
).values(status=RunStatus.RUNNING.value, attempt=RUNS.c.attempt + 1,
         started_at=bindparam("b_now"), lease_expires_at=bindparam("b_lease"),
         deadline_at=bindparam("b_deadline"), blocked_at=None,
         last_seq=RUNS.c.last_seq + 1).returning(RUNS.c.attempt, RUNS.c.last_seq))

NEXT_SEQ = Prepared(update(RUNS).where(_owned_run()).values(
    last_seq=RUNS.c.last_seq + 1).returning(RUNS.c.last_seq))
# The same, for a worker's attempt: only while that attempt holds the run.
NEXT_SEQ_OF_ATTEMPT = Prepared(update(RUNS).where(
    _owned_run(), RUNS.c.attempt == bindparam("b_attempt"),
    _status_in(_values(EXECUTING)),
).values(last_seq=RUNS.c.last_seq + 1).returning(RUNS.c.last_seq))

EVENT_COLUMNS = ("owner_id", "run_id", "thread_id", "seq", "cursor", "type", "data", "ts")
INSERT_EVENT = Prepared(insert(EVENTS).values(
    {name: bindparam(name, type_=EVENTS.c[name].type) for name in EVENT_COLUMNS}))

NEXT_BLOCKED = Prepared(select(RUNS.c.id).where(
    RUNS.c.owner_id == bindparam("b_owner"), _status_in(_values(WAITING)),
    RUNS.c.blocked_at.is_not(None),
).order_by(RUNS.c.created_at, RUNS.c.id).limit(bindparam("b_limit", type_=Integer())))


@lru_cache(maxsize=64)
def transition(from_values: tuple[str, ...], with_attempt: bool, with_lease: bool,
               columns: tuple[str, ...], numbered: bool = False) -> Prepared:
    """The conditional status change of one call shape (few exist: engine end, cancel,
    reaper, watchdog), built once; values arrive as `v_<column>`, the conditions as `b_*`.
    `numbered`: the same UPDATE also takes the run's next `seq` (for the event logged with
    the change) and returns it."""
    stmt = update(RUNS).where(_owned_run(), _status_in(from_values))
    if with_attempt:
        stmt = stmt.where(RUNS.c.attempt == bindparam("b_attempt"))
    if with_lease:
        stmt = stmt.where(RUNS.c.lease_expires_at < bindparam("b_lease_before",
                                                               type_=RUNS.c.lease_expires_at.type))
    stmt = stmt.values({RUNS.c[name]: bindparam(f"v_{name}", type_=RUNS.c[name].type)
                        for name in columns})
    if numbered:
        stmt = stmt.values(last_seq=RUNS.c.last_seq + 1).returning(RUNS.c.last_seq)
    return Prepared(stmt)


COUNT_WAITING = Prepared(select(func.count()).where(
    RUNS.c.owner_id == bindparam("b_owner"), _status_in(_values(WAITING))))

# No ORDER BY: with one, SQLite walks the thread's whole history in the (owner, thread,
# created_at) index to skip a sort; without, it reads the few active rows through the
# (owner, thread, status) index. The caller orders them.
ACTIVE_IN_THREAD = Prepared(select(RUNS.c.id, RUNS.c.created_at).where(
    RUNS.c.owner_id == bindparam("b_owner"), RUNS.c.thread_id == bindparam("b_thread"),
    _status_in(_values(ACTIVE)),
))

# The owner's thread, created on first use (another owner's same id is another thread).
ENSURE_THREAD = Prepared({name: stmt.on_conflict_do_nothing() for name, stmt in _per_dialect(
    lambda ins: ins(THREADS).values(owner_id=bindparam("b_owner"), id=bindparam("b_thread"),
                                    created_at=bindparam("b_now"))).items()})

_NEW_RUN_COLUMNS = ("id", "owner_id", "thread_id", "agent", "input", "metadata", "request_id",
                    "status", "created_at", "attempt", "last_seq", "queue", "idempotency_key",
                    "dispatch", "dispatched_at")
# A new run, inserted only while its owner has fewer than `b_max` waiting runs: the queued
# limit's check and the write are one statement (one fewer per submission, and the count is
# taken under the insert's write lock). Values arrive as `v_<column>`; no row back: limit
# reached.
INSERT_RUN_IF_ROOM = Prepared(insert(RUNS).from_select(
    list(_NEW_RUN_COLUMNS),
    select(*(bindparam(f"v_{name}", type_=RUNS.c[name].type) for name in _NEW_RUN_COLUMNS))
    .where(select(func.count()).where(
        RUNS.c.owner_id == bindparam("v_owner_id", type_=RUNS.c.owner_id.type),
        _status_in(_values(WAITING)),
    ).scalar_subquery() < bindparam("b_max", type_=Integer())),
    include_defaults=False,
).returning(RUNS.c.id))  # (psycopg's rowcount of an INSERT ... SELECT is -1: read a row back)
# The same insert without the limit.
INSERT_RUN = Prepared(insert(RUNS).values(
    {name: bindparam(f"v_{name}", type_=RUNS.c[name].type) for name in _NEW_RUN_COLUMNS}))

# The lease of the attempt holding the run, extended; its status and cancel request come back
# in the same statement (no row: the attempt no longer holds the run).
RENEW_LEASE = Prepared(update(RUNS).where(
    _owned_run(), RUNS.c.attempt == bindparam("b_attempt"), _status_in(_values(EXECUTING)),
).values(lease_expires_at=bindparam("v_lease", type_=RUNS.c.lease_expires_at.type),
         ).returning(RUNS.c.status, RUNS.c.cancel_requested_at))

RUN_STATUS = Prepared(
    select(RUNS.c.status).where(_owned_run(), RUNS.c.attempt == bindparam("b_attempt")))
