"""``unmask simulate``: write a simulated event stream and its ground truth to files."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

from pipeline.settings import REPO_ROOT, Settings
from pipeline.sim.generate import Simulation

TRUTH_HEADER = ["account_id", "is_campaign", "campaign_id", "style", "avatar_kind", "photo_key"]


def faces_dir() -> Path:
    """``<shared>/data/faces``; the shared directory is UNMASK_SHARED_DIR or <repo>/../shared."""
    shared = Path(os.environ.get("UNMASK_SHARED_DIR") or REPO_ROOT.parent / "shared")
    return shared / "data" / "faces"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="write a simulated account-event stream with ground truth")
    p.add_argument("--accounts", type=int, required=True, help="number of accounts")
    p.add_argument("--days", type=float, default=30.0, help="length of the stream, days")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="events, one JSON object per line")
    p.add_argument("--truth", type=Path, required=True, help="ground truth CSV")
    p.add_argument("--campaigns", type=int, default=None,
                   help="number of campaigns (default by size)")
    p.add_argument("--avatar-dir", type=Path, default=None,
                   help="write edited copies of stolen photos here (else the originals are reused)")
    p.add_argument("--no-avatars", action="store_true", help="no avatar_url (large runs)")
    p.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    faces = None if args.no_avatars else faces_dir()
    if faces is not None and not (faces / "real").is_dir():
        raise SystemExit(f"no faces under {faces}; set UNMASK_SHARED_DIR or use --no-avatars")
    sim = Simulation(args.accounts, args.days, args.seed, avatars=not args.no_avatars,
                     faces_dir=faces, avatar_dir=args.avatar_dir, campaigns=args.campaigns)
    n = 0
    with open(args.out, "w", encoding="utf-8") as fh:
        for event in sim.events():
            fh.write(json.dumps(event, separators=(",", ":")) + "\n")
            n += 1
    with open(args.truth, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(TRUTH_HEADER)
        for row in sim.truth():
            writer.writerow(row.as_csv())
    print(f"wrote {n} events for {args.accounts} accounts ({sim.n_campaign} in "
          f"{len(sim.campaigns)} campaigns) to {args.out}; truth in {args.truth}")
    return 0
