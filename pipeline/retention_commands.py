"""Subcommand ``unmask retention run``: delete data past its retention age (cron it daily)."""

from __future__ import annotations

import argparse
import json

from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("retention", help="delete raw events, marks, old windows and DLQ records")
    actions = p.add_subparsers(dest="retention_action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="delete everything older than the retention age")
    run.add_argument("--older-than-days", type=float, default=None,
                     help="default: settings.signals.retention_days")
    run.add_argument("--db", default=None, help="SQLAlchemy URL (default: settings)")
    run.set_defaults(func=cmd_retention_run)


def cmd_retention_run(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.retention import run_retention
    from pipeline.store.db import make_engine

    engine = make_engine(args.db or settings.database.url)
    try:
        deleted = run_retention(engine, settings, older_than_days=args.older_than_days)
    finally:
        engine.dispose()
    print(json.dumps({"deleted": deleted}))
    return 0
