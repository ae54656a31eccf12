"""Imports every table module so that ``metadata`` holds the whole schema (for Alembic)."""

from pipeline.store import tables  # noqa: F401
from pipeline.store import signal_tables  # noqa: F401
from pipeline.store import dedupe_tables  # noqa: F401
from pipeline.store import review_tables  # noqa: F401
