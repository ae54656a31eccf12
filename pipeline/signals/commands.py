"""Subcommand ``unmask recluster``: run the reconcile job once and publish its revised decisions."""

from __future__ import annotations

import argparse
import json

from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "recluster",
        help="re-cluster the stored accounts order-independently, revise affected decisions",
    )
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: settings)")
    p.add_argument("--no-publish", action="store_true",
                   help="store revised decisions only (a worker's timer publishes them later)")
    p.add_argument("--only-if-free", action="store_true",
                   help="do nothing when another process is reconciling (exit status 0)")
    p.set_defaults(func=cmd_recluster)


def cmd_recluster(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.review.outbox import KafkaDecisionSink
    from pipeline.signals.recluster import mark_published, reconcile, unpublished_revisions
    from pipeline.store.db import make_engine

    engine = make_engine(args.db or settings.database.url)
    try:
        report = reconcile(engine, settings, only_if_free=args.only_if_free)
        summary = report.summary()
        if not args.no_publish:
            pending = unpublished_revisions(engine)
            if pending:
                sink = KafkaDecisionSink(settings.kafka.bootstrap, settings.kafka.topic_decisions)
                try:
                    sink.send_all([(d.account_id.encode(), json.dumps(d.to_dict()).encode())
                                   for d in pending])
                finally:
                    sink.close()
                mark_published(engine, [d.decision_id for d in pending])
            summary["published"] = len(pending)
    finally:
        engine.dispose()
    print(json.dumps(summary))
    return 0
