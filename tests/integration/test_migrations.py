"""Schema migrations on real SQLite files, with rows in them: upgrading keeps every row, and
the constraints hold afterwards.

SQLite cannot alter most of a table, so Alembic's batch mode copies the table, drops the
original and renames the copy. With foreign keys enforced, that DROP first deletes every row,
and `events` (ON DELETE CASCADE to `runs`) lost its whole log on the way from 0001 to 0002;
`storage/migrations/env.py` now turns enforcement off while migrating.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from storage.db import MIGRATIONS, make_engine

NOW = "2026-11-25 00:00:00.000000"


@pytest.fixture
def database(tmp_path: Path) -> tuple[Path, Config, Engine]:
    path = tmp_path / "old.db"
    engine = make_engine(f"sqlite:///{path}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    yield path, config, engine
    engine.dispose()


def _rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _insert_run(db: sqlite3.Connection, run_id: str, owner: str, key: str | None = None) -> None:
    columns = ("id, owner_id, thread_id, agent, status, input, metadata, request_id, attempt, "
               "last_seq, created_at") + (", idempotency_key" if key is not None else "")
    values = [run_id, owner, "t", "echo", "completed", "{}", "{}", "r", 1, 2, NOW]
    values += [key] if key is not None else []
    db.execute(f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' * len(values))})", values)


def test_upgrading_from_the_first_revision_keeps_every_run_and_every_event(database):
    path, config, _engine = database
    command.upgrade(config, "0001")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO threads VALUES ('alice', 't', ?)", (NOW,))
        _insert_run(db, "run-1", "alice")
        for seq, kind in ((1, "agent_started"), (2, "agent_completed")):
            db.execute("INSERT INTO events"
                       " (owner_id, run_id, thread_id, seq, cursor, type, data, ts)"
                       " VALUES ('alice', 'run-1', 't', ?, ?, ?, '{}', ?)", (seq, seq, kind, NOW))

    command.upgrade(config, "head")

    assert _rows(path, "runs") == 1
    assert _rows(path, "events") == 2  # was 0: the batch copy of `runs` cascaded into the log
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_idempotency_keys_stay_unique_per_owner_and_keyless_runs_stay_out_of_the_index(database):
    path, config, engine = database
    command.upgrade(config, "0003")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO threads VALUES ('alice', 't', ?), ('bob', 't', ?)", (NOW, NOW))
        _insert_run(db, "run-1", "alice", key="k1")
        _insert_run(db, "run-2", "alice")
        _insert_run(db, "run-3", "alice")

    command.upgrade(config, "head")

    with sqlite3.connect(path) as db:
        (index,) = db.execute("SELECT sql FROM sqlite_master WHERE name = "
                              "'uq_runs_owner_idempotency'").fetchone()
        owner_index = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'ix_runs_owner_id'")
        assert owner_index.fetchone() is None
    assert "WHERE idempotency_key IS NOT NULL" in index
    insert = text("INSERT INTO runs (id, owner_id, thread_id, agent, status, input, metadata, "
                  "request_id, attempt, last_seq, created_at, idempotency_key) VALUES "
                  "(:id, :owner, 't', 'echo', 'queued', '{}', '{}', 'r', 0, 0, :now, :key)")
    with engine.begin() as connection:  # another owner's k1, and more runs without a key
        connection.execute(insert, {"id": "run-4", "owner": "bob", "key": "k1", "now": NOW})
        connection.execute(insert, {"id": "run-5", "owner": "alice", "key": None, "now": NOW})
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert, {"id": "run-6", "owner": "alice", "key": "k1", "now": NOW})
    assert _rows(path, "runs") == 5

    command.downgrade(config, "0003")  # and back: the rows survive both ways
    command.upgrade(config, "head")
    assert _rows(path, "runs") == 5
