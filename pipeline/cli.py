"""The ``unmask`` command: one subcommand per job, each stage contributing its own.

Each ``pipeline.<stage>.commands`` module exposes ``register(subparsers)``; this module only
collects them. Settings are built once here and handed to the subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pipeline.logging import configure_logging
from pipeline.settings import Settings

COMMAND_MODULES = (
    "pipeline.stream.commands",
    "pipeline.avatars.commands",
    "pipeline.review.commands",
    "pipeline.sim.commands",
    "pipeline.dedupe.commands",
    "pipeline.retention_commands",
    "pipeline.signals.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unmask", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not getattr(args, "pass_through", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.train_args = [*extra, *args.train_args]
    settings = Settings()
    configure_logging(settings.log_level)
    result = args.func(args, settings)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
