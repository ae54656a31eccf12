"""Engine construction and idempotency helpers shared by every stage that writes.

Every write that an event causes is guarded by a mark in ``processed_events`` taken in the
same transaction (``claim_once``), so at-least-once delivery never doubles an effect.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from pipeline import jsonbytes
from pipeline.store.tables import processed_events


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """A SQLAlchemy engine for ``url``; SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def drop_database(admin: Engine, name: str, attempts: int = 10) -> None:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)`` on PostgreSQL through ``admin`` (an
    AUTOCOMMIT engine on another database of the server), retried while the server refuses.

    FORCE ends the database's client connections, but a role without superuser may not end a
    server process of another role, such as an autovacuum worker that is in the database at
    that moment: the server then answers InsufficientPrivilege (42501) or ObjectInUse (55006)
    until it leaves. Any other error, or the last refusal, is raised.
    """
    for attempt in range(attempts):
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except sa.exc.DBAPIError as exc:
            code = getattr(exc.orig, "pgcode", None)
            if code not in {"42501", "55006"} or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT with ON CONFLICT support (PostgreSQL or SQLite)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


dialect_insert = _insert
"""Public name of the dialect's INSERT with ON CONFLICT support, for callers that build their
own ``on_conflict_do_update`` clauses."""


def insert_ignore(
    conn: Connection,
    table: sa.Table,
    rows: list[dict[str, Any]] | dict[str, Any],
    index_elements: list[str] | None = None,
) -> int:
    """INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite; returns rows inserted."""
    if not rows:
        return 0
    stmt = _insert(conn, table).on_conflict_do_nothing(index_elements=index_elements)
    result = conn.execute(stmt, rows)
    return int(result.rowcount or 0)


def upsert(
    conn: Connection,
    table: sa.Table,
    row: dict[str, Any],
    index_elements: list[str],
    update: dict[str, Any],
) -> None:
    """INSERT ... ON CONFLICT (index_elements) DO UPDATE SET update, on PostgreSQL and SQLite."""
    stmt = _insert(conn, table).values(**row)
    conn.execute(stmt.on_conflict_do_update(index_elements=index_elements, set_=update))


def pg_execute_prepared(
    conn: Connection, name: str, prepare: str, execute: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """Rows of ``execute`` run with ``params`` on the caller's DBAPI connection, inside the
    caller's transaction, after ``prepare`` (the ``PREPARE name ...`` statement) has run once
    on that connection: a server-side prepared statement, remembered in the pooled
    connection's ``info`` under ``name`` (it lives as long as the DBAPI connection). No SQL
    compilation and no planning per call. PostgreSQL only."""
    pooled = conn.connection
    cursor = pooled.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if not pooled.info.get(name):
            cursor.execute(prepare)
            pooled.info[name] = True
        cursor.execute(execute, tuple(params))
        return [tuple(r) for r in cursor.fetchall()]
    finally:
        cursor.close()


def claim_once(conn: Connection, event_id: str, stage: str) -> bool:
    """Mark (event_id, stage) as processed inside the caller's transaction.

    Returns True the first time, False when the mark already exists (a redelivery): the
    caller then skips its writes. The mark commits or rolls back with the caller's writes.
    """
    row = {"event_id": event_id, "stage": stage, "processed_at": datetime.now(UTC)}
    return insert_ignore(conn, processed_events, row, ["event_id", "stage"]) == 1


def claim_many(conn: Connection, event_ids: Sequence[str], stage: str) -> set[str]:
    """``claim_once`` for a batch in one statement (one unnest INSERT on PostgreSQL): the ids
    marked now (not before)."""
    unique = sorted(set(event_ids))
    if not unique:
        return set()
    now = datetime.now(UTC)
    rows = [{"event_id": e, "stage": stage, "processed_at": now} for e in unique]
    if conn.dialect.name == "postgresql":
        result = pg_bulk_insert(
            conn,
            processed_events,
            rows,
            "ON CONFLICT (event_id, stage) DO NOTHING RETURNING event_id",
        )
        return {r[0] for r in result}
    stmt = (
        _insert(conn, processed_events)
        .on_conflict_do_nothing(index_elements=["event_id", "stage"])
        .returning(processed_events.c.event_id)
    )
    return {r[0] for r in conn.execute(stmt, rows)}


_PG_ARRAY_TYPES = {
    sa.String: "text",
    sa.Text: "text",
    sa.BigInteger: "bigint",
    sa.Integer: "integer",
    sa.Float: "double precision",
    sa.Boolean: "boolean",
    sa.DateTime: "timestamptz",
}


def _pg_type(column: sa.Column[Any]) -> str:
    if isinstance(column.type, sa.JSON):
        return "jsonb"
    for cls, name in _PG_ARRAY_TYPES.items():
        if isinstance(column.type, cls):
            return name
    raise TypeError(f"no PostgreSQL array type for {column.table.name}.{column.name}")


def _column_source(column: str, pg_type: str) -> str:
    """The set-returning call that unpacks the parameter of ``column``: an array literal
    (:func:`pg_array`), or for JSON one JSON array (:func:`_column_param`)."""
    if pg_type == "jsonb":
        return f"jsonb_array_elements(CAST(:{column} AS jsonb))"
    return f"unnest(CAST(:{column} AS {pg_type}[]))"


def _column_param(values: Sequence[Any], pg_type: str) -> str:
    if pg_type == "jsonb":
        return jsonbytes.dumps_text(list(values))
    return pg_array(values, pg_type)


@cache
def _pg_unnest_insert(table: sa.Table, columns: tuple[str, ...], tail: str) -> sa.TextClause:
    # ROWS FROM unpacks the columns in step: what unnest(a, b, ...) of several arrays is
    sources = ", ".join(_column_source(c, _pg_type(table.c[c])) for c in columns)
    names = ", ".join(columns)
    return sa.text(
        f"INSERT INTO {table.name} AS t ({names}) SELECT * FROM ROWS FROM ({sources}) {tail}"
    )


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text_element(value: Any) -> str:
    return "NULL" if value is None else _quoted(str(value))


def _int_element(value: Any) -> str:
    return "NULL" if value is None else str(int(value))


def _float_element(value: Any) -> str:
    return "NULL" if value is None else repr(float(value))


def _bool_element(value: Any) -> str:
    return "NULL" if value is None else ("t" if value else "f")


def _time_element(value: Any) -> str:
    if value is None:
        return "NULL"
    return _quoted(value.isoformat() if isinstance(value, datetime) else str(value))


_ELEMENT = {
    "text": _text_element,
    "bigint": _int_element,
    "integer": _int_element,
    "double precision": _float_element,
    "boolean": _bool_element,
    "timestamptz": _time_element,
}


def pg_array(values: Iterable[Any], pg_type: str = "text") -> str:
    """``values`` as one PostgreSQL array literal (``{"a","b",NULL}``) for ``CAST(:p AS
    <pg_type>[])``: the server reads it with the element type's input function, the same
    values as a list parameter gives, which psycopg2 sends as ``ARRAY[...]`` of one constant
    per element for the server to parse and cast one by one (about 3x the CPU on both sides
    for the thousands of elements a batch sends). Text is always quoted (``NULL`` only for
    None); floats travel as their shortest round-trip ``repr``, so the stored double is the
    same. JSON columns do not travel as arrays (see :func:`pg_bulk_insert`)."""
    if pg_type == "text":
        items = values if isinstance(values, list) else list(values)
        try:
            joined = '","'.join(items)
        except TypeError:
            pass
        else:
            if joined.count('"') == 2 * max(len(items) - 1, 0) and "\\" not in joined:
                return '{"' + joined + '"}' if items else "{}"
        values = items
    elif pg_type in ("bigint", "integer"):
        items = values if isinstance(values, list) else list(values)
        try:
            return "{" + ",".join(map(int.__repr__, items)) + "}"
        except TypeError:
            values = items
    elif pg_type == "timestamptz":
        return "{" + ",".join(_times(values)) + "}"
    element = _ELEMENT[pg_type]
    return "{" + ",".join(map(element, values)) + "}"


def _times(values: Iterable[Any]) -> Iterator[str]:
    """Timestamp elements; a run of one object (a batch's ``now``) is formatted once."""
    last: Any = _times
    text = ""
    for value in values:
        if value is not last:
            last, text = value, _time_element(value)
        yield text


def pg_bulk_insert(
    conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], tail: str = ""
) -> sa.CursorResult[Any]:
    """PostgreSQL only: ``INSERT INTO table AS t ... SELECT * FROM ROWS FROM (unnest(one array
    per column), ...) <tail>`` for all ``rows`` (which share their keys): one statement with one
    parameter per column, 4-5x faster than SQLAlchemy's multi-row VALUES pages for a thousand
    rows. ``tail`` is raw SQL (``ON CONFLICT ...``, ``RETURNING ...``); the target table is
    aliased ``t``. Each column travels as one array literal (:func:`pg_array`), except JSON
    columns: one JSON array (:mod:`pipeline.jsonbytes`, orjson) unpacked by
    ``jsonb_array_elements`` in step with the arrays, one encoder call and no array-literal
    quoting of every document; None is stored as JSON ``null``, as SQLAlchemy's JSON type
    stores it."""
    return pg_bulk_insert_columns(conn, table, {c: [row[c] for row in rows] for c in rows[0]}, tail)


def pg_bulk_insert_columns(
    conn: Connection, table: sa.Table, columns: dict[str, Sequence[Any]], tail: str = ""
) -> sa.CursorResult[Any]:
    """:func:`pg_bulk_insert` of rows given as one sequence of values per column (all of one
    length), for callers that have the columns already."""
    params = {c: _column_param(values, _pg_type(table.c[c])) for c, values in columns.items()}
    return conn.execute(_pg_unnest_insert(table, tuple(columns), tail), params)


def bulk_insert_ignore(
    conn: Connection, table: sa.Table, rows: list[dict[str, Any]], index_elements: list[str]
) -> None:
    """``insert_ignore`` of many rows sharing their keys, one unnest statement on PostgreSQL."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        pg_bulk_insert(conn, table, rows, f"ON CONFLICT ({', '.join(index_elements)}) DO NOTHING")
        return
    insert_ignore(conn, table, rows, index_elements)
