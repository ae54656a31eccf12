"""A stage run in a child process of the worker (``worker.process_stages``).

A worker runs its stages in threads of one interpreter. A stage that alternates short Python
steps with database statements (signals: ~20 statements per micro-batch) spends much of its
time *after* each statement waiting for the interpreter lock, held by the other stage thread or
the event loop: profiled at 1,000-event batches, the signals thread waited longer for the lock
(~47 % of its time) than for PostgreSQL (~27 %), and since the signals stage is the worker's
critical path that wait capped the whole worker (docs/benchmarks.md). In a child process the
stage has an interpreter of its own.

:class:`ProcessStage` has the :class:`~pipeline.stages.Stage` interface: ``process(batch)``
sends the batch (pickled envelopes) to a single-worker process pool whose child built the real
stage from the same settings; the child sends back only the fields its stage changed in each
envelope, which the worker applies to its own copies. The stage's guarantees are unchanged:
the child runs the same ``process`` in its own transaction (idempotent on event ids), a batch
fails as a whole, and the agent still retries and splits batches as before. Failures cross the
process boundary as two exceptions the agent already knows how to treat:

* a transient dependency failure in the child (:data:`~pipeline.stages.TRANSIENT`) comes back as
  :class:`~pipeline.stages.StageUnavailable` (retried), as does the death of the child (the
  pool is rebuilt on the next call);
* any other error comes back as :class:`ChildStageError` with the child's ``repr`` and
  traceback text (the agent splits the batch and dead-letters the envelopes that fail alone).

The child ignores SIGINT and SIGTERM: the worker's process group gets those signals and the
worker shuts the child down itself (:meth:`ProcessStage.close`) after the batch in flight. A
child whose worker died without that (SIGKILL, a crash) exits at once.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from pipeline.stages import TRANSIENT, StageUnavailable
from pipeline.types import Envelope

if TYPE_CHECKING:
    from pipeline.settings import Settings
    from pipeline.stages import Stage

log = logging.getLogger(__name__)


class ChildStageError(Exception):
    """A non-transient error of the stage in the child process (its repr and traceback)."""


class ProcessStage:
    """The stage ``name`` built and run in one child process (spawned on first use)."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self._settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_child,
                    initargs=(self._settings, self.name),
                )
                log.info("stage %s runs in a child process", self.name)
            return self._pool

    def start(self) -> None:
        """Start the child and build its stage now (else on the first batch)."""
        self._executor().submit(_ready).result()

    def process(self, batch: Sequence[Envelope]) -> list[Envelope]:
        pool = self._executor()
        try:
            changes = pool.submit(_process, list(batch)).result()
        except BrokenProcessPool as exc:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise StageUnavailable(f"the {self.name} child process ended: {exc}") from exc
        return [
            dataclasses.replace(env, **changed) if changed else env
            for env, changed in zip(batch, changes, strict=True)
        ]

    def close(self) -> None:
        """Stop the child after the batch it is running, if any."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_FIELDS = tuple(f.name for f in dataclasses.fields(Envelope))

_stage: Stage | None = None
"""The child's stage (set by :func:`_start_child`)."""


def _start_child(settings: Settings, name: str) -> None:
    global _stage
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    from pipeline.compose import build_engine, build_stages
    from pipeline.logging import configure_logging
    from pipeline.stream.commands import tune_gc

    configure_logging(settings.log_level)
    engine = build_engine(settings)
    (_stage,) = build_stages(settings, engine, [name])
    tune_gc()


def _exit_with_parent() -> None:
    """End the child when the worker ends without closing it (killed): the pool's queues keep
    both pipe ends open in the child, so it would otherwise wait for work forever. A batch in
    flight is abandoned uncommitted, as the worker's own would be."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(70)


def _ready() -> str:
    assert _stage is not None
    return _stage.name


def _process(batch: list[Envelope]) -> list[dict[str, Any]]:
    """The stage's output as each envelope's changed fields: what the stage added goes back,
    not the event and earlier stages' results the worker already holds (half the pickling)."""
    assert _stage is not None
    try:
        out = _stage.process(batch)
        return [
            {f: getattr(o, f) for f in _FIELDS if getattr(o, f) is not getattr(i, f)}
            for i, o in zip(batch, out, strict=True)
        ]
    except TRANSIENT as exc:
        raise StageUnavailable(f"{type(exc).__name__}: {str(exc).splitlines()[0][:500]}") from None
    except Exception as exc:  # noqa: BLE001 - sent to the worker, which dead-letters the event
        raise ChildStageError(f"{exc!r}\n{traceback.format_exc()[-4000:]}") from None
