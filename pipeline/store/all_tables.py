"""Imports every table module so that ``metadata`` holds the whole schema (for Alembic)."""

from pipeline.store import tables  # noqa: F401
