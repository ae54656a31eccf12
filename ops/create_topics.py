"""Create the pipeline's Kafka topics from ``ops/topics.json``.

Faust would auto-create topics with broker defaults; partition counts decide how far the
consumer group can scale, so they are set explicitly here, once, from one definition file.
Running it again is harmless: existing topics are kept, and a topic with fewer partitions
than defined is grown (Kafka cannot shrink one, so more partitions than defined is reported).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

DEFAULT_FILE = Path(__file__).resolve().with_name("topics.json")


@dataclass(frozen=True)
class TopicSpec:
    """One topic as defined in the definition file."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


def load_specs(path: Path) -> list[TopicSpec]:
    """Read topic definitions; raises ValueError on a malformed file."""
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    default_rf = int(raw.get("replication_factor", 1))
    specs = []
    for item in raw["topics"]:
        partitions = int(item["partitions"])
        if partitions < 1:
            raise ValueError(f"{item['name']}: partitions must be >= 1")
        specs.append(
            TopicSpec(
                name=str(item["name"]),
                partitions=partitions,
                replication_factor=int(item.get("replication_factor", default_rf)),
                configs={str(k): str(v) for k, v in item.get("configs", {}).items()},
            )
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate topic names in definition file")
    return specs


def connect(bootstrap: str, deadline: float) -> KafkaAdminClient:
    """Return an admin client, retrying until ``deadline`` (time.monotonic())."""
    while True:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        try:
            return KafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="unmask-create-topics",
                request_timeout_ms=15000,
                bootstrap_timeout_ms=max(1000, remaining_ms),
            )
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partition count of each named topic that exists."""
    existing = set(admin.list_topics())
    wanted = [n for n in names if n in existing]
    if not wanted:
        return {}
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(wanted)}


def ensure_topics(admin: KafkaAdminClient, specs: list[TopicSpec]) -> list[str]:
    """Create missing topics and grow short ones; returns human-readable lines."""
    report: list[str] = []
    current = partition_counts(admin, [s.name for s in specs])
    missing = [s for s in specs if s.name not in current]
    if missing:
        admin.create_topics(
            {
                s.name: {
                    "num_partitions": s.partitions,
                    "replication_factor": s.replication_factor,
                    "configs": s.configs,
                }
                for s in missing
            },
            timeout_ms=30000,
            wait_for_metadata=True,
        )
        report += [f"created  {s.name} ({s.partitions} partitions)" for s in missing]
    grow = {s.name: s.partitions for s in specs if current.get(s.name, s.partitions) < s.partitions}
    if grow:
        admin.create_partitions(
            {name: {"count": count} for name, count in grow.items()}, timeout_ms=30000
        )
        report += [f"grown    {n} ({current[n]} -> {c} partitions)" for n, c in grow.items()]
    for s in specs:
        have = current.get(s.name)
        if have is None or s.name in grow:
            continue
        if have > s.partitions:
            report.append(f"WARNING  {s.name} has {have} partitions, defined {s.partitions}")
        else:
            report.append(f"exists   {s.name} ({have} partitions)")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="host:port of a broker")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="topic definition file")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for Kafka")
    args = parser.parse_args(argv)

    specs = load_specs(args.file)
    deadline = time.monotonic() + args.timeout
    try:
        admin = connect(args.bootstrap, deadline)
    except KafkaError as exc:
        print(f"create_topics: cannot reach Kafka at {args.bootstrap}: {exc}", file=sys.stderr)
        return 2
    try:
        for line in ensure_topics(admin, specs):
            print(line)
    finally:
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
