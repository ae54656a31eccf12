"""Imports every table module so that ``metadata`` holds the whole schema (for Alembic)."""

from pipeline.store import (
    dedupe_tables,  # noqa: F401
    review_tables,  # noqa: F401
    signal_tables,  # noqa: F401
    tables,  # noqa: F401
)
