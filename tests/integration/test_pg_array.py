"""Array literals (``pipeline.store.db.pg_array``) give PostgreSQL the same values as list
parameters, which psycopg2 sends as ``ARRAY[...]`` constructors."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from pipeline.store.db import make_engine, pg_array, pg_bulk_insert

TEXTS = [
    "plain",
    "",
    " padded ",
    "NULL",
    "null",
    'quote " inside',
    "back\\slash",
    "\\",
    '\\"',
    "{braces},commas",
    "tab\there\nnewline",
    "ünïcødé ✓ 漢字",
    "'single'",
    None,
]
PLAIN = ["a", "", " padded ", "NULL", "{x,y}", "tab\t", "ünïcødé", "'q'"]
"""No double quote, no backslash, no None: the text fast path."""
INTS = [0, 1, -1, 2**62, -(2**62), None, True, False]
FLOATS = [0.0, -0.0, 0.1, 1 / 3, 1e-300, 1.7976931348623157e308, 12345.6789, float("inf"), None]
BOOLS = [True, False, None, 1, 0]
TIMES = [
    datetime(2026, 11, 29, 19, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    None,
]

DOCS: list[Any] = [
    {"a": [1, 2.5, None], "b": 'q"\\', "c": "ünïcødé ✓ 漢字\ttab"},
    None,
    [],
    "text",
    3,
    {"nested": {"x": 1e-5, "y": [True, False, {}]}},
    {1: "int key", "k": -0.0},
    [2**70, "an integer beyond 64 bits"],  # orjson refuses it: the batch falls back to json
]
"""JSON column values: a document is stored the same by the bulk path (orjson, one JSON array
unpacked by jsonb_array_elements) as by SQLAlchemy's JSON type (json.dumps per row)."""


def _roundtrip(conn: sa.Connection, param: Any, pg_type: str) -> list[Any]:
    return list(
        conn.execute(
            sa.text(
                f"SELECT x FROM unnest(CAST(:p AS {pg_type}[])) WITH ORDINALITY AS u(x, i) "
                "ORDER BY i"
            ),
            {"p": param},
        ).scalars()
    )


@pytest.mark.postgres
def test_array_literals_equal_list_parameters(fresh_database_url: str) -> None:
    engine = make_engine(fresh_database_url)
    with engine.connect() as conn:
        for values, pg_type, as_list in (
            (TEXTS, "text", TEXTS),
            (PLAIN, "text", PLAIN),
            (INTS[:5], "bigint", INTS[:5]),
            (INTS, "bigint", [None if v is None else int(v) for v in INTS]),
            (FLOATS, "double precision", FLOATS),
            (BOOLS, "boolean", [None if v is None else bool(v) for v in BOOLS]),
            (TIMES, "timestamptz", TIMES),
        ):
            got = _roundtrip(conn, pg_array(values, pg_type), pg_type)
            want = _roundtrip(conn, as_list, pg_type)
            assert got == want, pg_type
            assert [type(v) for v in got] == [type(v) for v in want]
        neg_zero = _roundtrip(conn, pg_array([-0.0], "double precision"), "double precision")
        assert math.copysign(1.0, neg_zero[0]) == -1.0
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("docs", [DOCS[:-1], DOCS], ids=["orjson", "json-fallback"])
def test_bulk_insert_stores_what_an_insert_per_row_stores(
    fresh_database_url: str, docs: list[Any]
) -> None:
    meta = sa.MetaData()
    table = sa.Table(
        "t_bulk",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("n", sa.BigInteger),
        sa.Column("x", sa.Float),
        sa.Column("ok", sa.Boolean),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("doc", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")),
    )
    engine = make_engine(fresh_database_url)
    meta.create_all(engine)
    rows = [
        {
            "id": i,
            "name": TEXTS[i % len(TEXTS)],
            "n": [0, 7, -(2**62), None][i % 4],
            "x": FLOATS[i % len(FLOATS)],
            "ok": [True, False, None][i % 3],
            "at": TIMES[i % len(TIMES)],
            "doc": docs[i % len(docs)] if i % 3 else {"i": i, "s": TEXTS[i % len(TEXTS)]},
        }
        for i in range(40)
    ]
    with engine.begin() as conn:
        pg_bulk_insert(conn, table, rows)
        bulk = [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]
        conn.execute(table.delete())
        conn.execute(table.insert(), rows)
        one_by_one = [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    engine.dispose()
    assert bulk == one_by_one
