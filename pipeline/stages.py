"""The contract every stage implements, and the order in which an event walks them.

validate -> avatar -> dedupe -> signals -> decide. The embedded runner calls the stages in a
loop; the Faust app gives each stage its own agent between two topics. Same logic, two runners.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import exc as sa_exc

from pipeline import metrics
from pipeline.types import Envelope

STAGE_ORDER = ("avatar", "dedupe", "signals", "decide")


class StageUnavailable(Exception):
    """A dependency (database, fetch pool) is down; the batch may be retried as a whole."""


TRANSIENT: tuple[type[Exception], ...] = (
    StageUnavailable,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
)
"""Failures after which a whole batch is retried (a dependency is down), not dead-lettered."""


class Stage(Protocol):
    """One step of the pipeline.

    ``process`` is blocking (it may do database or CPU work; the Faust agent runs it in a
    thread) and returns one envelope per input envelope, in order, enriched with this stage's
    output. It is idempotent on ``event.event_id``: processing the same envelope twice has the
    effect of processing it once, and returns the same output. Bad input never raises: it is
    recorded in the envelope (for example ``AvatarResult.refused(code)``). Transient failures of
    a dependency raise :class:`StageUnavailable` (or the driver's OperationalError) and nothing of
    the batch is committed.
    """

    name: str

    def process(self, batch: Sequence[Envelope]) -> list[Envelope]: ...


def run_stage(stage: Stage, batch: Sequence[Envelope]) -> list[Envelope]:
    """Call ``stage.process`` and record its wall time; what every runner uses."""
    started = time.perf_counter()
    try:
        return stage.process(batch)
    finally:
        metrics.STAGE_SECONDS.labels(stage.name).observe(time.perf_counter() - started)
