"""Small helpers for SQL that must read the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, Column, DateTime, Table, TypeDecorator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.base import ReadOnlyColumnCollection

T = TypeVar("T")
# Stays under SQLite's bound-parameter limit with room for other parameters.
CHUNK = 900


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Aware UTC, as the tables store it; a naive time is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert(conn: Connection, table: Any) -> Any:
    """An INSERT that knows ON CONFLICT on both dialects."""
    target: Table = table.__table__ if hasattr(table, "__table__") else table
    if conn.dialect.name == "postgresql":
        return postgresql.insert(target)
    return sqlite.insert(target)


def upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Insert rows, overwriting every non-key column of rows that already exist."""
    if not rows:
        return
    stmt = insert(conn, table)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    if updates:
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_=updates)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    conn.execute(stmt, rows)


def table_of(model: Any) -> Table:
    """The Core table of a SQLModel class, so expressions type-check as columns."""
    table: Table = model.__table__
    return table


def cols(model: Any) -> ReadOnlyColumnCollection[str, Column[Any]]:
    return table_of(model).c


def _sqlite_datetime(value: datetime) -> str:
    # The storage format of SQLAlchemy's SQLite DateTime, in UTC as the tables keep it.
    if value.tzinfo is not UTC:
        value = as_utc(value)
    # 26 characters: the aware form's "+00:00" is dropped.
    return value.isoformat(sep=" ", timespec="microseconds")[:26]


def _is_datetime(kind: Any) -> bool:
    if isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    return isinstance(kind, DateTime)


def bulk_write(
    conn: Connection,
    model: Any,
    rows: list[dict[str, Any]],
    *,
    keys: Sequence[str] = (),
    on_conflict: str = "error",
    set_sql: dict[str, str] | None = None,
) -> None:
    """INSERT many rows straight through the driver.

    The hot path of ingestion: SQLAlchemy's per-value type processing costs more than the
    insert itself, so JSON and datetimes are converted here once, in the same stored form.
    `on_conflict` is "error", "ignore" or "update" on `keys`; an update overwrites the non-key
    columns, or sets them to the SQL in `set_sql` (which may use `excluded.<column>`)."""
    if not rows:
        return
    table = table_of(model)
    names = list(rows[0])
    json_cols = {c.name for c in table.c if isinstance(c.type, JSON)}
    time_cols = {c.name for c in table.c if _is_datetime(c.type)}
    sqlite_dialect = conn.dialect.name == "sqlite"

    to_time = _sqlite_datetime if sqlite_dialect else as_utc

    def column(name: str) -> list[Any]:
        # Converted a column at a time: a per-value dispatch costs as much as the insert.
        values = [row[name] for row in rows]
        if name in json_cols:
            return [None if v is None else json.dumps(v) for v in values]
        if name in time_cols:
            return [None if v is None else to_time(v) for v in values]
        return values

    columns = [column(n) for n in names]
    into = f"INSERT INTO {table.name} ({', '.join(names)})"
    tail = ""
    if on_conflict != "error":
        target = f" ON CONFLICT ({', '.join(keys)})"
        updates = [n for n in names if n not in keys]
        if on_conflict == "update" and updates:
            exprs = set_sql or {}
            tail = (
                target
                + " DO UPDATE SET "
                + ", ".join(f"{n} = {exprs.get(n, f'excluded.{n}')}" for n in updates)
            )
        else:
            tail = target + " DO NOTHING"
    if sqlite_dialect:
        # In-process executemany is the fastest path SQLite has.
        values = f" VALUES ({', '.join(['?'] * len(names))})"
        conn.exec_driver_sql(into + values + tail, list(zip(*columns, strict=True)))
        return
    # Over the network, one statement per batch: the columns go as arrays and unnest into rows,
    # so there is neither a round trip per row nor a placeholder per value to parse.
    types = [table.c[n].type.compile(dialect=conn.dialect) for n in names]
    arrays = ", ".join(f"%s::{kind}[]" for kind in types)
    conn.exec_driver_sql(f"{into} SELECT * FROM unnest({arrays}){tail}", tuple(columns))
