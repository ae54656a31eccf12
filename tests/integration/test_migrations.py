"""Alembic migrations: one linear history, reversible, and in step with the SQLAlchemy tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import pipeline.store.all_tables  # noqa: F401
from pipeline.store.migrate import alembic_config, upgrade
from pipeline.store.tables import metadata


def test_history_is_one_linear_chain() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1
    revisions = list(script.walk_revisions())
    assert all(not isinstance(r.down_revision, tuple) for r in revisions)


def check_url(url: str) -> None:
    upgrade(url, "head")
    command.downgrade(alembic_config(url), "base")
    upgrade(url, "head")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    # index/constraint naming aside, tables and columns must match the models exactly
    structural = [
        d for d in diff if d[0] in ("add_table", "remove_table", "add_column", "remove_column")
    ]
    assert structural == [], structural


def test_sqlite_upgrade_downgrade_and_models_match(tmp_path: Path) -> None:
    check_url(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_postgres_upgrade_downgrade_and_models_match(fresh_database_url: str) -> None:
    check_url(fresh_database_url)
