"""Prepared: a prebuilt Core statement run straight on the driver's cursor.

The per-run hot path (submission, claim, events, the terminal change) runs about a dozen
statements per run. Through `Connection.execute` each one costs SQLAlchemy's per-execution
work (an execution context, parameter construction and processing, a result object), which
on SQLite is most of a statement's time (docs/benchmarks.md). A Prepared compiles its statement
once per dialect, keeps the SQL text, the order of its parameters and their type processors,
and on each call hands the driver the processed values directly. SQLAlchemy still builds
the SQL (so it stays dialect-correct and defined in one place, `storage.statements`),
converts the values (the same bind and result processors the ORM uses, so rows read the
same either way), and owns the connection and its transaction.

Only what the hot statements need is supported: named `bindparam`s and literal constants,
no expanding (`IN` list) parameters, one row set per call.

What it gives up and how that is made good:
- SQLAlchemy wraps every driver error in its own (`sqlalchemy.exc.IntegrityError`, ...), and
  callers catch those. A driver error raised here is wrapped the same way (`DBAPIError.
  instance`, which SQLAlchemy itself uses), and a connection the driver reports lost is
  invalidated, as SQLAlchemy's own execution does, so the pool does not hand it out again.
- It reads a few attributes of SQLAlchemy's compiler (`positiontup`, `binds`, `bind_names`,
  `escaped_bind_names`): tests/contract/test_sqlalchemy_contract.py pins them, and setup.cfg
  bounds SQLAlchemy's version.
- The bypass can be switched off (`RUNLANE_DIRECT_SQL=false`: SQLAlchemy Core executes the
  same statements), for a driver that misbehaves and to measure what the bypass saves
  (`bench/e2e.py --sql core`; docs/benchmarks.md).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

Executor = Session | Connection
Processor = Callable[[Any], Any] | None
# The execution option (set on the engine by storage.db.Database) that turns the bypass off.
DIRECT_OPTION = "runlane_direct_sql"


class _Compiled:
    """One statement's SQL for one dialect, and how to turn a call's values into the
    driver's parameters and its row back into Python values."""

    __slots__ = ("names", "params", "positional", "results", "sql")

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.positional: bool = dialect.positional
        if dialect.positional:  # qmark (SQLite): in the order of the SQL text
            binds = [(name, compiled.binds[name]) for name in compiled.positiontup or ()]
        else:  # pyformat (psycopg): by name, each bind once
            binds = [(name, bind) for bind, name in compiled.bind_names.items()]
        escaped = getattr(compiled, "escaped_bind_names", None) or {}
        self.names = [escaped.get(name, name) for name, _bind in binds]  # as the SQL spells them
        # Per driver parameter: (its key as the caller passes it, or None for a constant;
        # the constant's processed value; the type's bind processor).
        self.params: list[tuple[str | None, Any, Processor]] = []
        for name, bind in binds:
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.expanding:
                raise ValueError(f"{name}: expanding parameters are not supported")
            if bind.required:  # a `bindparam(key)` without a value: the caller passes `key`
                self.params.append((bind.key, None, process))
            else:  # a constant of the statement (`literal(v)`, `.values(column=v)`)
                value = bind.effective_value
                self.params.append(
                    (None, process(value) if process is not None else value, None))
        columns = list(getattr(statement, "exported_columns", ()))
        self.results: list[Processor] = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in columns
        ]

    def driver_params(self, values: Mapping[str, Any]) -> Any:
        out = []
        for key, constant, process in self.params:
            if key is None:
                out.append(constant)
            else:
                value = values[key]  # processors take None too (JSON stores it as `null`)
                out.append(process(value) if process is not None else value)
        return tuple(out) if self.positional else dict(zip(self.names, out, strict=True))

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(value if process is None else process(value)
                     for process, value in zip(self.results, raw, strict=False))


class Prepared:
    """A statement (or one per dialect name) compiled on first use per dialect. A constant:
    it holds SQL text and processors, never values."""

    __slots__ = ("_compiled", "_statements")

    def __init__(self, statement: Any) -> None:
        self._statements: Mapping[str, Any] | Any = statement
        self._compiled: dict[str, _Compiled] = {}

    @property
    def statement(self) -> Any:
        """The Core statement (for callers that need SQLAlchemy's own execution)."""
        return self._statements

    def _for(self, connection: Connection) -> _Compiled:
        dialect = connection.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = _Compiled(self._statement_for(dialect),
                                                                dialect)
        return compiled

    def _statement_for(self, dialect: Dialect) -> Any:
        return (self._statements[dialect.name]
                if isinstance(self._statements, Mapping) else self._statements)

    def _run(self, executor: Executor, values: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        connection = executor if isinstance(executor, Connection) else executor.connection()
        compiled = self._for(connection)
        dbapi_connection = connection.connection
        cursor = dbapi_connection.driver_connection.cursor()  # type: ignore[union-attr]
        params = compiled.driver_params(values)
        try:
            cursor.execute(compiled.sql, params)
        except Exception as exc:
            cursor.close()
            dialect = connection.dialect
            dbapi_error = dialect.loaded_dbapi.Error
            if not isinstance(exc, dbapi_error):
                raise
            lost = dialect.is_disconnect(exc, dbapi_connection, cursor)
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(compiled.sql, params, exc, dbapi_error,
                                      connection_invalidated=lost, dialect=dialect) from exc
        return compiled, cursor

    @staticmethod
    def _direct(connection: Connection) -> bool:
        return bool(connection.get_execution_options().get(DIRECT_OPTION, True))

    def _core(self, executor: Executor, values: Mapping[str, Any]) -> Any | None:
        """SQLAlchemy's own execution of the statement, when the bypass is off."""
        connection = executor if isinstance(executor, Connection) else executor.connection()
        if self._direct(connection):
            return None
        return connection.execute(self._statement_for(connection.dialect), dict(values))

    def rowcount(self, executor: Executor, values: Mapping[str, Any]) -> int:
        result = self._core(executor, values)
        if result is not None:
            return int(result.rowcount)
        _compiled, cursor = self._run(executor, values)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def first(self, executor: Executor, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        result = self._core(executor, values)
        if result is not None:
            row = result.first()
            return tuple(row) if row is not None else None
        compiled, cursor = self._run(executor, values)
        try:
            raw = cursor.fetchone()
            if raw is not None:
                cursor.fetchall()  # drain (RETURNING must be read to the end on SQLite)
            return compiled.row(raw) if raw is not None else None
        finally:
            cursor.close()

    def scalar(self, executor: Executor, values: Mapping[str, Any]) -> Any:
        row = self.first(executor, values)
        return row[0] if row is not None else None

    def all(self, executor: Executor, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        result = self._core(executor, values)
        if result is not None:
            return [tuple(row) for row in result]
        compiled, cursor = self._run(executor, values)
        try:
            return [compiled.row(raw) for raw in cursor.fetchall()]
        finally:
            cursor.close()
