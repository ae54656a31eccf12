"""Subcommands of review: ``review`` (serve the app), ``reviewer add``, ``labels export``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from pipeline.settings import Settings

PASSWORD_ENV = "UNMASK_REVIEWER_PASSWORD"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("review", help="serve the reviewers' web page and API (uvicorn)")
    p.add_argument("--host", default=None, help="default: settings.review.host")
    p.add_argument("--port", type=int, default=None, help="default: settings.review.port")
    p.add_argument("--db", default=None, help="SQLAlchemy URL (default: settings)")
    p.add_argument("--no-publish", action="store_true",
                   help="do not run the Kafka outbox publisher in this process")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("review-publish", help="send unpublished reviewer decisions to Kafka once")
    p.add_argument("--db", default=None)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("reviewer", help="manage reviewer accounts")
    rsub = p.add_subparsers(dest="reviewer_command", required=True)
    a = rsub.add_parser("add", help=f"create a reviewer (password: ${PASSWORD_ENV} or prompt)")
    a.add_argument("username")
    a.add_argument("--role", required=True, choices=["reviewer", "lead", "admin"])
    a.add_argument("--time-zone", default="UTC", help="IANA zone for timestamps, e.g. Europe/Paris")
    a.add_argument("--db", default=None)
    a.set_defaults(func=cmd_reviewer_add)

    p = sub.add_parser("labels", help="reviewer labels for retraining")
    lsub = p.add_subparsers(dest="labels_command", required=True)
    e = lsub.add_parser("export", help="write reviewer labels as JSON lines or CSV")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--format", choices=["jsonl", "csv"], default=None,
                   help="default: from the file suffix (.csv, else jsonl)")
    e.add_argument("--since-id", type=int, default=0, help="only labels with a larger id")
    e.add_argument("--kind", choices=["avatar", "photo", "account"], default=None)
    e.add_argument("--db", default=None)
    e.set_defaults(func=cmd_labels_export)


def _engine(settings: Settings, db: str | None):  # type: ignore[no-untyped-def]
    from pipeline.store.db import make_engine

    return make_engine(db or settings.database.url, settings.database.pool_size)


def cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from pipeline.review.app import create_app
    from pipeline.review.outbox import OutboxPublisher

    engine = _engine(settings, args.db)
    publisher: OutboxPublisher | None = None
    hooks = None
    if settings.review.publish_decisions and not args.no_publish:
        publisher = OutboxPublisher(engine, settings.kafka.bootstrap,
                                    settings.kafka.topic_decisions,
                                    settings.review.publish_interval_s)
        def stop_publisher() -> None:
            assert publisher is not None
            publisher.stop()
            publisher.join(timeout=20)

        hooks = (publisher.start, stop_publisher)
    app = create_app(settings, engine, on_decision=publisher.wake if publisher else None,
                     lifespan_hooks=hooks)
    uvicorn.run(app, host=args.host or settings.review.host, port=args.port or
                settings.review.port, log_level=settings.log_level.lower(), proxy_headers=False)
    return 0


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.review.outbox import DecisionOutbox, KafkaDecisionSink

    sink = KafkaDecisionSink(settings.kafka.bootstrap, settings.kafka.topic_decisions)
    try:
        sent = DecisionOutbox(_engine(settings, args.db), sink).drain()
    finally:
        sink.close()
    print(f"published {sent} reviewer decisions to {settings.kafka.topic_decisions}")
    return 0


def cmd_reviewer_add(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.review.auth import create_reviewer

    password = os.environ.get(PASSWORD_ENV)
    if not password:
        password = getpass.getpass(f"Password for {args.username}: ")
        if getpass.getpass("Again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 2
    try:
        reviewer = create_reviewer(_engine(settings, args.db), args.username, password,
                                   args.role, args.time_zone, created_by="cli")
    except ValueError as exc:
        print(f"reviewer add: {exc}", file=sys.stderr)
        return 2
    print(f"created {reviewer.role} {reviewer.username} (id {reviewer.id})")
    return 0


def cmd_labels_export(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.review.labels import export_labels

    count = export_labels(_engine(settings, args.db), args.out, args.format, args.since_id,
                          args.kind)
    print(f"wrote {count} labels to {args.out}")
    return 0
