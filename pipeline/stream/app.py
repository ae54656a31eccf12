"""The Faust app: one short agent per stage, chained through Kafka topics.

accounts.events -> [validate] -> accounts.validated.v1 -> [avatar] -> avatars.scored.v1
-> [dedupe] -> avatars.matched.v1 -> [signals] -> accounts.signals.v1 -> [decide]
-> enforcement.decisions (+ PostgreSQL). Refused records go to accounts.dlq.

A worker may run only some of the agents (``settings.worker.agents``, e.g. an avatar-only pool
for the CPU-bound avatar stage); it then joins its own consumer group
(:func:`pipeline.settings.worker_group`), since Faust's assignor expects every member of a group
to run the same agents. A worker that runs both signals and decide runs them in one agent on
``avatars.matched.v1`` (decide on each micro-batch right after signals, overlapped with the next
batch's signals), so its events skip the ``accounts.signals.v1`` hop; its decide agent still
drains that topic, which then carries only what signals-only workers (or an older version) sent.

Delivery is at least once: an agent acknowledges a micro-batch's records (which lets their
offsets be committed) only after the broker acknowledged everything it sent for them, and
every stage is idempotent on event_id, so a redelivery has no second effect. Stage calls run in a
thread (they block on the database or the CPU); while a dependency is down the batch is retried
with capped exponential back-off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import faust
from sqlalchemy.engine import Engine

from pipeline import jsonbytes, metrics
from pipeline.events import InvalidEvent, parse_event
from pipeline.settings import AGENTS, Settings, worker_group
from pipeline.stages import TRANSIENT, Stage, run_stage
from pipeline.stream.dlq import dead_letter, record_dead_letters
from pipeline.types import Envelope

if TYPE_CHECKING:
    from pipeline.decide.stage import DecideStage

log = logging.getLogger(__name__)
Fetched = tuple[Sequence[faust.EventT[Any]], list[Envelope], list[dict[str, Any]]]
"""A micro-batch as consumed, its decoded envelopes, and dead letters for the undecodable."""


async def retry_transient(what: str, fn: Callable[[], Any], max_backoff: float) -> Any:
    """Run blocking ``fn`` in a thread until it succeeds or fails with a non-transient error."""
    delay = 0.2
    while True:
        try:
            result = await asyncio.to_thread(fn)
            metrics.DEPENDENCY_UP.labels("database").set(1)
            return result
        except TRANSIENT as exc:
            metrics.DEPENDENCY_UP.labels("database").set(0)
            metrics.STAGE_RETRIES.labels(what).inc()
            log.warning(
                "stage %s: dependency unavailable, retrying in %.1fs: %s",
                what,
                delay,
                str(exc).splitlines()[0][:200],
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)


def event_batches(stream: faust.StreamT[Any], size: int) -> AsyncIterator[list[faust.EventT[Any]]]:
    """Micro-batches of events that are NOT acknowledged yet (faust's ``noack_take``, which
    yields events; faust declares it on ``Stream`` only and types it as yielding values)."""
    batches = stream.noack_take(size, within=0.05)  # type: ignore[attr-defined]
    return cast(AsyncIterator[list[faust.EventT[Any]]], batches)


def create_app(
    settings: Settings,
    engine: Engine,
    stages: Sequence[Stage],
    agents: Sequence[str] = AGENTS,
) -> faust.App:
    """A Faust app with the agents named in ``agents`` (validate, avatar, dedupe, signals,
    decide), each stage agent running the stage of that name from ``stages``; its app id (the
    consumer group) is :func:`~pipeline.settings.worker_group` of the configured group.

    Raises ValueError when ``stages`` lacks the stage of one of ``agents``.
    """
    k = settings.kafka
    by_name = {stage.name: stage for stage in stages}
    missing = [a for a in agents if a != "validate" and a not in by_name]
    if missing:
        raise ValueError(f"no stage given for agent(s) {', '.join(missing)}")
    app = faust.App(
        worker_group(k.consumer_group, tuple(agents)),
        broker=f"kafka://{k.bootstrap}",
        store="memory://",
        topic_partitions=k.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_commit_every=200,
        broker_commit_interval=1.0,
        producer_acks=-1,
        producer_max_batch_size=512 * 1024,
        stream_wait_empty=False,
        datadir=str(Path(tempfile.gettempdir()) / "unmask-faust-{conf.id}-data"),
    )
    max_backoff = settings.database.retry_max_seconds

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def json_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, key_serializer="raw", value_serializer="json")

    events_topic = raw_topic(k.topic_events)
    dlq_topic = json_topic(k.topic_dlq)
    chain = [k.topic_validated, k.topic_scored, k.topic_matched, k.topic_signals]
    topics = [json_topic(name) for name in chain]
    sources = [raw_topic(name) for name in chain]
    runs_decide = "decide" in agents
    runs_timer = "signals" in agents and settings.signals.recluster_interval_s > 0
    decisions_topic = json_topic(k.topic_decisions) if runs_decide or runs_timer else None

    async def ack_all(stream: faust.StreamT[Any], events: Sequence[faust.EventT[Any]]) -> None:
        """Mark a micro-batch consumed, only once its outputs are acknowledged by the broker.

        ``take``/``take_events`` ack their batch in a ``finally``, so a worker stopped mid-batch
        (SIGTERM, a revoked partition) committed offsets of records whose outputs were never
        sent; ``noack_take`` plus this ack leaves an interrupted batch to be redelivered."""
        for event in events:
            await stream.ack(event)

    async def send_all(topic: faust.TopicT, records: Iterable[tuple[bytes, Any]]) -> None:
        """Send JSON records (key, value) to ``topic`` and wait until the broker has them all.

        Straight to the producer with the value already encoded: Faust's ``Topic.send`` adds a
        channel, a future message and a codec lookup per record, a third of the worker's
        event-loop time at thousands of records a second."""
        producer = await app.maybe_start_producer()
        name = topic.get_topic_name()
        futures = [
            await producer.send(name, key, jsonbytes.dumps(value), None, None, None)
            for key, value in records
        ]
        await asyncio.gather(*futures)

    async def dead_letter_all(records: list[dict[str, Any]]) -> None:
        if not records:
            return
        await retry_transient("dlq", lambda: record_dead_letters(engine, records), max_backoff)
        await send_all(dlq_topic, (((r["key"] or "").encode(), r) for r in records))
        metrics.EVENTS_PRODUCED.labels(k.topic_dlq).inc(len(records))

    async def validate(stream: faust.StreamT[bytes]) -> None:
        async for events in event_batches(stream, 500):
            good: list[Envelope] = []
            dead: list[dict[str, Any]] = []
            for event in events:
                msg = event.message
                metrics.EVENTS_CONSUMED.labels(k.topic_events).inc()
                value = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
                try:
                    good.append(Envelope(event=parse_event(value)))
                except InvalidEvent as exc:
                    metrics.EVENTS_FAILED.labels(k.topic_events, exc.code).inc()
                    dead.append(
                        dead_letter(
                            value,
                            exc,
                            msg.topic,
                            msg.partition,
                            msg.offset,
                            event.key if isinstance(event.key, bytes) else None,
                        )
                    )
            await dead_letter_all(dead)
            await send_all(topics[0], ((e.event.account_id.encode(), e.to_dict()) for e in good))
            metrics.EVENTS_PRODUCED.labels(chain[0]).inc(len(good))
            await ack_all(stream, events)

    if "validate" in agents:
        app.agent(events_topic, name="validate")(validate)

    def stage_agent(
        stage: Stage,
        source: faust.TopicT,
        sink: faust.TopicT | None,
        then: Stage | None = None,
    ) -> None:
        """One agent running ``stage`` on micro-batches of ``source``, its outputs to ``sink``
        (``None``: the decide stage, whose decisions go to the decisions topic).

        With ``then`` (the decide stage, when this worker also runs it) the agent runs both
        stages on each micro-batch, with no topic between them: the next batch's ``stage``
        overlaps this batch's ``then`` (each in its own thread), as two agents joined by a topic
        would, without a second produced and consumed message and envelope encoding per event.
        A batch is acknowledged only after its decisions are, and batches in order.
        """
        batch_size = (
            settings.avatars.batch_size if stage.name == "avatar" else settings.worker.batch_size
        )
        topic_name = source.get_topic_name()

        async def finish_then(
            stream: faust.StreamT[Any],
            events: Sequence[faust.EventT[Any]],
            batch: list[Envelope],
        ) -> None:
            assert then is not None
            metrics.STAGE_BATCH_MESSAGES.labels(then.name).observe(len(batch))
            decided, failed = await run_guarded(then, batch, topic_name)
            await dead_letter_all(failed)
            await publish_decisions(decided)
            await ack_all(stream, events)

        def decode(events: Sequence[faust.EventT[Any]]) -> Fetched:
            metrics.STAGE_BATCH_MESSAGES.labels(stage.name).observe(len(events))
            envelopes = []
            dead: list[dict[str, Any]] = []
            for event in events:
                value = event.value
                try:
                    envelopes.append(Envelope.from_dict(jsonbytes.loads(value)))
                except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
                    raw_value = value if isinstance(value, bytes) else str(value).encode()
                    dead.append(
                        dead_letter(
                            raw_value,
                            InvalidEvent("processing_failed", f"bad envelope: {exc}"),
                            topic_name,
                            None,
                            None,
                            None,
                        )
                    )
            metrics.EVENTS_CONSUMED.labels(topic_name).inc(len(events))
            return events, envelopes, dead

        async def fetch(stream: faust.StreamT[Any], ready: asyncio.Queue[Fetched]) -> None:
            async for events in event_batches(stream, batch_size):
                await ready.put(decode(events))

        async def consume_stage(stream: faust.StreamT[Any]) -> None:
            """Batches are fetched and decoded one ahead (``fetch``), so the next batch's window
            and decoding overlap this batch's stage call instead of following it."""
            ready: asyncio.Queue[Fetched] = asyncio.Queue(maxsize=1)
            fetcher = asyncio.create_task(fetch(stream, ready))
            tail: asyncio.Task[None] | None = None
            try:
                while True:
                    getter = asyncio.ensure_future(ready.get())
                    await asyncio.wait((getter, fetcher), return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        fetcher.result()
                        break
                    events, envelopes, dead = getter.result()
                    processed, failed = await run_guarded(stage, envelopes, topic_name)
                    await dead_letter_all(dead + failed)
                    if then is not None:
                        if tail is not None:
                            await tail
                        tail = asyncio.create_task(finish_then(stream, events, processed))
                        continue
                    if sink is not None:
                        await send_all(
                            sink, ((e.event.account_id.encode(), e.to_dict()) for e in processed)
                        )
                        metrics.EVENTS_PRODUCED.labels(sink.get_topic_name()).inc(len(processed))
                    else:
                        await publish_decisions(processed)
                    await ack_all(stream, events)
                if tail is not None:
                    await tail
            finally:
                running = [t for t in (fetcher, tail) if t is not None and not t.done()]
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)

        app.agent(source, name=stage.name)(consume_stage)

    async def run_guarded(
        stage: Stage, batch: list[Envelope], topic: str
    ) -> tuple[list[Envelope], list[dict[str, Any]]]:
        """Process a batch; a batch that fails for a non-transient reason is split so that only
        the envelopes that fail on their own are dead-lettered (processing_failed)."""
        if not batch:
            return [], []
        try:
            result: list[Envelope] = await retry_transient(
                stage.name, lambda: run_stage(stage, batch), max_backoff
            )
            return result, []
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream
            if len(batch) > 1:
                done: list[Envelope] = []
                dead: list[dict[str, Any]] = []
                for env in batch:
                    ok, bad = await run_guarded(stage, [env], topic)
                    done.extend(ok)
                    dead.extend(bad)
                return done, dead
            env = batch[0]
            log.exception(
                "stage %s failed on event",
                stage.name,
                extra={"event_id": env.event.event_id, "account_id": env.event.account_id},
            )
            metrics.EVENTS_FAILED.labels(topic, "processing_failed").inc()
            raw_value = json.dumps(env.to_dict(), default=str).encode()
            failure = InvalidEvent(
                "processing_failed", f"{stage.name}: {exc!r}", env.event.event_id
            )
            return [], [
                dead_letter(raw_value, failure, topic, None, None, env.event.account_id.encode())
            ]

    decide_stage = cast("DecideStage | None", by_name.get("decide") if runs_decide else None)

    async def publish_decisions(processed: list[Envelope]) -> None:
        assert decide_stage is not None and decisions_topic is not None
        fresh = [e.decision for e in processed if e.decision is not None and e.decision_is_new]
        await send_all(decisions_topic, ((d.account_id.encode(), d.to_dict()) for d in fresh))
        metrics.EVENTS_PRODUCED.labels(k.topic_decisions).inc(len(fresh))
        ids = [d.decision_id for d in fresh]
        await retry_transient("publish", lambda: decide_stage.mark_published(ids), max_backoff)

    sinks: list[faust.TopicT | None] = [*topics[1:], None]
    fused = "signals" in agents and "decide" in agents
    for name, source, sink in zip(AGENTS[1:], sources, sinks, strict=True):
        if fused and name == "signals":
            stage_agent(by_name[name], source, None, then=by_name["decide"])
        elif name in agents:
            stage_agent(by_name[name], source, sink)

    interval = settings.signals.recluster_interval_s
    if runs_timer and decisions_topic is not None:
        if decide_stage is not None:
            policy = decide_stage.policy
        else:
            from pipeline.decide.policy import load_policy

            policy = load_policy(settings.decide.policy_path)

        async def recluster() -> None:
            """The reconcile job (pipeline/signals/recluster.py) on one worker of the group at a
            time, then its revised decisions (and any a crash left unpublished) to the topic."""
            from pipeline.signals.recluster import (
                mark_published,
                reconcile,
                unpublished_revisions,
            )

            try:
                report = await asyncio.to_thread(reconcile, engine, settings, policy, True)
                if not report.ran:
                    return
                log.info("recluster: %s", json.dumps(report.summary()))
                pending = await asyncio.to_thread(unpublished_revisions, engine)
            except TRANSIENT as exc:
                log.warning("recluster: database unavailable: %s", str(exc).splitlines()[0][:200])
                return
            except Exception:  # noqa: BLE001 - a failed round must not stop the worker
                log.exception("recluster: round failed; the next one retries")
                return
            if pending:
                await send_all(
                    decisions_topic, ((d.account_id.encode(), d.to_dict()) for d in pending)
                )
                metrics.EVENTS_PRODUCED.labels(k.topic_decisions).inc(len(pending))
                ids = [d.decision_id for d in pending]
                await retry_transient("publish", lambda: mark_published(engine, ids), max_backoff)

        app.timer(interval)(recluster)
    return app
