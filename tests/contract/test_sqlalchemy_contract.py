"""What storage/prepared.py relies on in SQLAlchemy (its adapter for the hot statements).

A `Prepared` compiles a Core statement once per dialect and runs it on the driver's cursor,
so it reads a few attributes of SQLAlchemy's compiler and turns the driver's errors into
SQLAlchemy's. Pinned here: the compiled statement's text and parameter order for both
dialects Runlane supports, the bind and result processors it calls, the error wrapping, and
that the bypass and SQLAlchemy Core's own execution read and write the same values.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from storage.db import make_engine
from storage.models import UTCDateTime
from storage.prepared import Prepared

META = MetaData()
ITEMS = Table("contract_items", META,
              Column("id", String(16), primary_key=True), Column("n", Integer),
              Column("data", JSON), Column("at", UTCDateTime))
UPDATE = update(ITEMS).where(ITEMS.c.id == bindparam("b_id")).values(
    n=bindparam("v_n", type_=Integer()), data=literal({"k": 1}, JSON()),
).returning(ITEMS.c.n, ITEMS.c.data)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.psycopg.dialect()],
                         ids=["sqlite", "postgresql+psycopg"])
def test_the_compiler_exposes_the_parameter_order_prepared_reads(dialect: Any) -> None:
    compiled = UPDATE.compile(dialect=dialect)
    assert isinstance(compiled.string, str) and "UPDATE contract_items" in compiled.string
    if dialect.positional:  # qmark: the order of the `?`s
        assert compiled.positiontup is not None
        order = list(compiled.positiontup)
        assert {"b_id", "v_n"} <= set(order) and set(order) <= set(compiled.binds)
    else:  # pyformat: by name
        names = dict(compiled.bind_names)
        assert {"b_id", "v_n"} <= set(names.values())
        assert isinstance(getattr(compiled, "escaped_bind_names", {}) or {}, dict)
    binds = {bind.key: bind for bind in compiled.binds.values()}
    assert binds["b_id"].required and not binds["b_id"].expanding
    constant = next(bind for bind in compiled.binds.values() if not bind.required)
    assert constant.effective_value == {"k": 1}
    # The bind processors `Prepared` applies itself (the result side is checked below).
    process = JSON().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None and process({"k": 1}) is not None
    assert [c.name for c in UPDATE.exported_columns] == ["n", "data"]


@pytest.fixture
def connection(tmp_path: Any) -> Iterator[Connection]:
    engine = make_engine(f"sqlite:///{tmp_path / 'contract.db'}")
    META.create_all(engine)
    with engine.begin() as conn:
        yield conn
    engine.dispose()


def test_prepared_reads_and_writes_what_core_does(connection: Connection) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    row = {"id": "a", "n": 1, "data": {"x": [1, None]}, "at": at}
    Prepared(insert(ITEMS).values({c: bindparam(c, type_=ITEMS.c[c].type) for c in row})
             ).rowcount(connection, row)
    query = select(ITEMS.c.n, ITEMS.c.data, ITEMS.c.at).where(ITEMS.c.id == bindparam("b_id"))
    through_core = tuple(connection.execute(query, {"b_id": "a"}).one())
    assert Prepared(query).first(connection, {"b_id": "a"}) == through_core == (
        1, {"x": [1, None]}, at)
    assert Prepared(UPDATE).first(connection, {"b_id": "a", "v_n": 5}) == (5, {"k": 1})


def test_driver_errors_are_wrapped_as_sqlalchemys(connection: Connection) -> None:
    statement = Prepared(insert(ITEMS).values(id=bindparam("b_id")))
    statement.rowcount(connection, {"b_id": "dup"})
    with pytest.raises(IntegrityError) as info:
        statement.rowcount(connection, {"b_id": "dup"})
    assert isinstance(info.value.orig, sqlite3.IntegrityError)
    assert isinstance(info.value, DBAPIError) and "contract_items" in str(info.value.statement)
