"""Upgrade a database to the newest schema with Alembic (``unmask migrate``)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from pipeline.settings import REPO_ROOT


def alembic_config(url: str) -> Config:
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    """Apply every migration up to ``revision`` (default: all heads)."""
    command.upgrade(alembic_config(url), revision)
