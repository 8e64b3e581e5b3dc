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
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

Executor = Session | Connection
Processor = Callable[[Any], Any] | None


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
            statement = (self._statements[dialect.name]
                         if isinstance(self._statements, Mapping) else self._statements)
            compiled = self._compiled[dialect.name] = _Compiled(statement, dialect)
        return compiled

    def _run(self, executor: Executor, values: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        connection = executor if isinstance(executor, Connection) else executor.connection()
        compiled = self._for(connection)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(compiled.sql, compiled.driver_params(values))
        return compiled, cursor

    def rowcount(self, executor: Executor, values: Mapping[str, Any]) -> int:
        _compiled, cursor = self._run(executor, values)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def first(self, executor: Executor, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
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
        compiled, cursor = self._run(executor, values)
        try:
            return [compiled.row(raw) for raw in cursor.fetchall()]
        finally:
            cursor.close()
