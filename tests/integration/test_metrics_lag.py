"""Consumer lag read from the real broker: log end minus the group's committed offset.

Records are produced to two partitions and part of them committed for a consumer group; the
lag monitor must report exactly the difference per partition, export it as
``unmask_consumer_lag_messages`` and drop the series of a partition this worker no longer owns.
"""

from __future__ import annotations

import uuid
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from pipeline.stream.monitoring import KafkaProbe, LagMonitor


def lag_sample(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value("unmask_consumer_lag_messages",
                                     {"topic": topic, "partition": str(partition)})


def test_lag_is_log_end_minus_committed_per_owned_partition(kafka_bootstrap: str,
                                                           kafka_topics: Any) -> None:
    topic = kafka_topics({"lag.test": 2})["lag.test"]
    other = kafka_topics({"lag.other": 1})["lag.other"]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(7):
        producer.send(topic, value=b"x%d" % i, partition=0)
    for i in range(4):
        producer.send(topic, value=b"y%d" % i, partition=1)
    producer.send(other, value=b"z", partition=0)
    producer.flush()
    producer.close()

    group = f"lag-test-{uuid.uuid4().hex[:8]}"
    committer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group,
                              enable_auto_commit=False)
    committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(5, "", -1)})
    committer.close()

    probe = KafkaProbe(kafka_bootstrap)
    probe.check()
    monitor = LagMonitor(probe, group, topics=[topic])
    monitor.set_assignment([(topic, 0), (topic, 1), (other, 0)])
    try:
        assert monitor.refresh() == {(topic, 0): 2, (topic, 1): 4}
        assert lag_sample(topic, 0) == 2 and lag_sample(topic, 1) == 4
        assert lag_sample(other, 0) is None

        monitor.set_assignment([(topic, 1)])
        assert monitor.refresh() == {(topic, 1): 4}
        assert lag_sample(topic, 0) is None, "a partition moved away must drop its series"

        monitor.set_assignment([])
        assert monitor.refresh() == {}
        assert lag_sample(topic, 1) is None
    finally:
        probe.close()
