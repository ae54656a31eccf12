"""The embedded runner: the same stages in one process, over a file of events.

Used by ``unmask replay`` and ``unmask demo`` (SQLite by default). Records are validated,
refused ones dead-lettered (into ``dlq_records`` and the report), valid ones walked through the
stages in micro-batches. Re-running a file has no further effect (idempotent on event_id).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from pipeline import metrics
from pipeline.decide.stage import DecideStage
from pipeline.events import InvalidEvent, parse_event
from pipeline.stages import TRANSIENT, Stage, run_stage
from pipeline.stream.dlq import dead_letter, record_dead_letters
from pipeline.types import Decision, Envelope

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    records: int = 0
    valid: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    replayed: int = 0
    latest: dict[str, Decision] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "valid": self.valid,
            "dead_letters": dict(self.dead_letters),
            "decisions": dict(self.decisions),
            "already_processed": self.replayed,
            "accounts": len(self.latest),
        }


class EmbeddedRunner:
    def __init__(self, engine: Engine, stages: Sequence[Stage], batch_size: int = 64) -> None:
        self.engine = engine
        self.stages = list(stages)
        self.batch_size = batch_size
        self.decide = next((s for s in self.stages if isinstance(s, DecideStage)), None)

    def run(
        self,
        records: Iterable[bytes],
        source: str = "file",
        on_decision: Callable[[Decision], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> RunReport:
        """Process every record; blocking. Returns counts and each account's latest decision."""
        report = RunReport()
        chunk: list[tuple[int, bytes]] = []
        for offset, raw in enumerate(records):
            chunk.append((offset, raw))
            if len(chunk) >= self.batch_size:
                self._run_chunk(chunk, source, report, on_decision)
                if progress:
                    progress(len(chunk))
                chunk = []
        if chunk:
            self._run_chunk(chunk, source, report, on_decision)
            if progress:
                progress(len(chunk))
        return report

    def _run_chunk(
        self,
        chunk: list[tuple[int, bytes]],
        source: str,
        report: RunReport,
        on_decision: Callable[[Decision], None] | None,
    ) -> None:
        batch: list[Envelope] = []
        dead: list[dict[str, Any]] = []
        for offset, raw in chunk:
            report.records += 1
            metrics.EVENTS_CONSUMED.labels(source).inc()
            try:
                batch.append(Envelope(event=parse_event(raw)))
            except InvalidEvent as exc:
                metrics.EVENTS_FAILED.labels(source, exc.code).inc()
                dead.append(dead_letter(raw, exc, source, None, offset, None))
        if dead:
            record_dead_letters(self.engine, dead)
            report.dead_letters.update(d["reason_code"] for d in dead)
        report.valid += len(batch)
        failed: list[dict[str, Any]] = []
        for stage in self.stages:
            if batch:
                batch = self._guarded(stage, batch, source, failed)
        if failed:
            record_dead_letters(self.engine, failed)
            report.dead_letters.update(d["reason_code"] for d in failed)
        published = []
        for env in batch:
            if env.decision is None:
                continue
            report.latest[env.event.account_id] = env.decision
            if env.decision_is_new:
                report.decisions[env.decision.action] += 1
                if on_decision:
                    on_decision(env.decision)
                published.append(env.decision.decision_id)
            else:
                report.replayed += 1
        if self.decide is not None:
            self.decide.mark_published(published)

    def _guarded(self, stage: Stage, batch: list[Envelope], source: str,
                 failed: list[dict[str, Any]]) -> list[Envelope]:
        """``stage.process(batch)``; a batch failing for a non-transient reason is split so that
        only envelopes failing on their own are dead-lettered (processing_failed), as in the
        Faust app. Transient (database) failures propagate."""
        try:
            return run_stage(stage, batch)
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the run
            if len(batch) > 1:
                return [out for env in batch
                        for out in self._guarded(stage, [env], source, failed)]
            env = batch[0]
            log.exception("stage %s failed on event", stage.name,
                          extra={"event_id": env.event.event_id})
            metrics.EVENTS_FAILED.labels(source, "processing_failed").inc()
            failure = InvalidEvent("processing_failed", f"{stage.name}: {exc!r}",
                                   env.event.event_id)
            raw = json.dumps(env.to_dict(), default=str).encode()
            failed.append(dead_letter(raw, failure, f"{source}:{stage.name}", None, None,
                                      env.event.account_id.encode()))
            return []


def read_jsonl(path: str) -> Iterable[bytes]:
    """Lines of a JSONL file as raw bytes (blank lines skipped)."""
    with open(path, "rb") as fh:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def decision_line(decision: Decision) -> str:
    return json.dumps(
        {
            "account_id": decision.account_id,
            "action": decision.action,
            "score": decision.score,
            "reasons": list(decision.reasons),
            "decision_id": decision.decision_id,
            "event_id": decision.event_id,
            "policy_version": decision.policy_version,
        }
    )
