"""What the worker watches about Kafka: broker reachability and consumer lag per partition.

Lag is read from the broker, not from the consumer's fetch state (which goes stale exactly when
a worker is stuck): for each partition assigned to this worker, the log end offset minus the
group's committed offset. Each worker exports only its own partitions, so
``sum by (instance)`` is per worker and ``sum by (topic, partition)`` has no double counting;
partitions that move to another worker are removed from this one's series.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pipeline import metrics

if TYPE_CHECKING:
    import faust

    from pipeline.health import HealthMonitor

log = logging.getLogger(__name__)

Partition = tuple[str, int]


def partition_lag(end_offsets: Mapping[Partition, int], committed: Mapping[Partition, int],
                  start_offsets: Mapping[Partition, int]) -> dict[Partition, int]:
    """Records behind the log end per partition of ``end_offsets``.

    Without a committed offset the group starts from the earliest retained record, so the
    lag is then measured from ``start_offsets`` (0 when unknown). Never negative.
    """
    return {tp: max(0, end - committed.get(tp, start_offsets.get(tp, 0)))
            for tp, end in end_offsets.items()}


class KafkaProbe:
    """A kafka-python admin client, created lazily and re-created after a failure.

    Blocking; every call is bounded by ``request_timeout_ms`` once connected (bootstrapping a
    client against a dead broker can take longer: run it under :class:`HealthMonitor`'s timeout).
    """

    def __init__(self, bootstrap: str, request_timeout_ms: int = 3000,
                 client_id: str = "unmask-monitor") -> None:
        self.bootstrap = bootstrap
        self.request_timeout_ms = request_timeout_ms
        self.client_id = client_id
        self._admin: Any = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise unless the cluster answers a metadata request."""
        self._call(lambda admin: admin.describe_cluster())

    def offsets(self, group: str, partitions: Iterable[Partition]
                ) -> tuple[dict[Partition, int], dict[Partition, int], dict[Partition, int]]:
        """``(end, committed, start)`` offsets of ``partitions`` for consumer group ``group``."""
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec

        tps = [TopicPartition(t, p) for t, p in partitions]
        if not tps:
            return {}, {}, {}

        def read(admin: Any) -> tuple[dict[Partition, int], ...]:
            ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
            starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps})
            groups = admin.list_group_offsets({group: tps})
            done = groups.get(group, {})
            return (
                {(tp.topic, tp.partition): o.offset for tp, o in ends.items()},
                {(tp.topic, tp.partition): o.offset for tp, o in done.items() if o.offset >= 0},
                {(tp.topic, tp.partition): o.offset for tp, o in starts.items()},
            )

        end, committed, start = self._call(read)
        return end, committed, start

    def close(self) -> None:
        with self._lock:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    def _call(self, fn: Any) -> Any:
        from kafka import KafkaAdminClient

        with self._lock:
            try:
                if self._admin is None:
                    self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                                   client_id=self.client_id,
                                                   request_timeout_ms=self.request_timeout_ms)
                return fn(self._admin)
            except Exception:
                if self._admin is not None:
                    self._admin.close()
                self._admin = None
                raise


class LagMonitor:
    """Exports ``unmask_consumer_lag_messages{topic,partition}`` for this worker's partitions.

    :meth:`set_assignment` is called from the event loop with the consumer's current
    assignment; :meth:`refresh` (blocking, from the health thread) reads offsets and updates the
    gauge.
    """

    def __init__(self, probe: KafkaProbe, group: str, topics: Iterable[str]) -> None:
        self.probe = probe
        self.group = group
        self.topics = frozenset(topics)
        self._assigned: frozenset[Partition] = frozenset()
        self._exported: set[Partition] = set()

    def set_assignment(self, partitions: Iterable[Partition]) -> None:
        self._assigned = frozenset(tp for tp in partitions if tp[0] in self.topics)

    def refresh(self) -> dict[Partition, int]:
        assigned = self._assigned
        end, committed, start = self.probe.offsets(self.group, sorted(assigned))
        lag = partition_lag(end, committed, start)
        for topic, partition in self._exported - set(lag):
            metrics.CONSUMER_LAG.remove(topic, str(partition))
        for (topic, partition), value in lag.items():
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(value)
        self._exported = set(lag)
        return lag


def watch_app(app: faust.App, monitor: HealthMonitor, lag: LagMonitor | None,
              interval_s: float = 5.0) -> None:
    """Add a timer to ``app`` that beats ``monitor``'s liveness and hands the consumer's current
    assignment to ``lag``. Call before the worker starts."""

    async def observe() -> None:
        monitor.beat()
        if lag is not None:
            lag.set_assignment((tp.topic, tp.partition) for tp in app.consumer.assignment())

    app.timer(interval=interval_s, name="unmask.monitoring")(observe)
