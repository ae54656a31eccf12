"""``unmask hash``, ``unmask match`` and ``unmask bank add|list|remove``."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from sqlalchemy.engine import Engine
from tqdm import tqdm

from pipeline.dedupe.hashes import compute_hashes
from pipeline.dedupe.stage import match_rule
from pipeline.dedupe.store import (
    add_bank_photo,
    decode_bytes,
    find_matches,
    list_bank,
    remove_bank_photo,
)
from pipeline.settings import Settings
from pipeline.store.db import make_engine
from pipeline.store.migrate import upgrade

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("hash", help="print the perceptual hashes of images, one JSON line each")
    p.add_argument("images", nargs="+", type=Path)
    p.set_defaults(func=cmd_hash)

    p = sub.add_parser("match", help="match images against the bank and stored avatars")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--db", help="database URL (default: settings)")
    p.set_defaults(func=cmd_match)

    bank = sub.add_parser("bank", help="the bank of known stolen photos")
    bsub = bank.add_subparsers(dest="bank_command", required=True, metavar="ACTION")
    p = bsub.add_parser("add", help="hash every image of a folder into the bank")
    p.add_argument("folder", type=Path)
    p.add_argument("--label", required=True)
    p.add_argument("--source", dest="origin", help="where the photos come from")
    p.add_argument("--added-by", default=None)
    p.add_argument("--db", help="database URL (default: settings)")
    p.set_defaults(func=cmd_bank_add)
    p = bsub.add_parser("list", help="list bank entries")
    p.add_argument("--db", help="database URL (default: settings)")
    p.set_defaults(func=cmd_bank_list)
    p = bsub.add_parser("remove", help="remove a bank entry")
    p.add_argument("photo_id")
    p.add_argument("--db", help="database URL (default: settings)")
    p.set_defaults(func=cmd_bank_remove)


def _engine(args: argparse.Namespace, settings: Settings) -> Engine:
    url = getattr(args, "db", None) or settings.database.url
    upgrade(url)
    return make_engine(url)


def _read(path: Path, settings: Settings) -> tuple[str, dict[str, str]]:
    data = path.read_bytes()
    image = decode_bytes(data, settings.avatars.max_pixels)
    return hashlib.sha256(data).hexdigest(), compute_hashes(image)


def cmd_hash(args: argparse.Namespace, settings: Settings) -> int:
    failed = 0
    for path in args.images:
        try:
            sha256, hashes = _read(path, settings)
        except Exception as error:  # noqa: BLE001 - reported per image
            failed += 1
            print(json.dumps({"image": str(path), "error": f"{type(error).__name__}: {error}"}))
            continue
        print(json.dumps({"image": str(path), "sha256": sha256, "hashes": hashes}))
    return 1 if failed else 0


def cmd_match(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(args, settings)
    failed = 0
    try:
        for path in args.images:
            try:
                sha256, hashes = _read(path, settings)
            except Exception as error:  # noqa: BLE001 - reported per image
                failed += 1
                print(json.dumps({"image": str(path), "error": f"{type(error).__name__}: {error}"}))
                continue
            with engine.connect() as conn:
                matches = find_matches(conn, settings.dedupe.radius, hashes, sha256,
                                       rule=match_rule(settings))
            print(json.dumps({"image": str(path), "sha256": sha256,
                              "matches": [m.to_dict() for m in matches]}))
    finally:
        engine.dispose()
    return 1 if failed else 0


def cmd_bank_add(args: argparse.Namespace, settings: Settings) -> int:
    files = sorted(p for p in args.folder.rglob("*") if p.is_file())
    engine = _engine(args, settings)
    added, bad = 0, []
    try:
        for path in tqdm(files, desc="bank add", unit="img", file=sys.stderr):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                bad.append((path, "not an image file name"))
                continue
            try:
                add_bank_photo(engine, settings.dedupe.radius, path.read_bytes(), args.label,
                               args.added_by, args.origin, str(path),
                               max_pixels=settings.avatars.max_pixels)
                added += 1
            except Exception as error:  # noqa: BLE001 - every bad file is reported, none stops
                bad.append((path, f"{type(error).__name__}: {error}"))
    finally:
        engine.dispose()
    for path, why in bad:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(json.dumps({"added": added, "skipped": len(bad)}))
    return 0


def cmd_bank_list(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(args, settings)
    try:
        for e in list_bank(engine):
            print(json.dumps({"id": e.photo_id, "label": e.label, "source": e.origin,
                              "added_by": e.added_by, "added_at": e.added_at.isoformat(),
                              "sha256": e.sha256, "file": e.filename, "hashes": e.hashes}))
    finally:
        engine.dispose()
    return 0


def cmd_bank_remove(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(args, settings)
    try:
        if not remove_bank_photo(engine, args.photo_id):
            print(f"no bank entry {args.photo_id}", file=sys.stderr)
            return 1
    finally:
        engine.dispose()
    print(json.dumps({"removed": args.photo_id}))
    return 0
