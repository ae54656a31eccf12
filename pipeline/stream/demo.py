"""``unmask demo``: a generated stream with an influence network, replayed in one process.

Ordinary sign-ups plus simulated campaigns (AI faces, stolen and re-used photos, shared
infrastructure, one promoted outlet) are written to a JSONL file, replayed through the same
stages as production on SQLite, and what was caught is printed against the ground truth.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import sqlalchemy as sa

from pipeline.settings import REPO_ROOT, Settings


def shared_faces_dir() -> Path | None:
    root = Path(os.environ.get("UNMASK_SHARED_DIR") or REPO_ROOT.parent / "shared")
    faces = root / "data" / "faces"
    return faces.resolve() if (faces / "real").is_dir() else None


def run_demo(
    settings: Settings,
    workdir: Path,
    accounts: int,
    days: float,
    seed: int,
    db: str | None,
    serve: bool = False,
) -> int:
    from tqdm import tqdm

    from pipeline.compose import build_stages
    from pipeline.sim.generate import Simulation
    from pipeline.store.db import make_engine
    from pipeline.store.migrate import upgrade
    from pipeline.store.tables import accounts as accounts_table
    from pipeline.store.tables import review_items
    from pipeline.stream.embedded import EmbeddedRunner, read_jsonl

    workdir.mkdir(parents=True, exist_ok=True)
    settings.review.image_dir = workdir / "images"
    faces = shared_faces_dir()
    avatar_dir = workdir / "avatars"
    sim = Simulation(
        accounts,
        days,
        seed,
        avatars=faces is not None,
        faces_dir=faces,
        avatar_dir=avatar_dir if faces else None,
    )
    events_path = workdir / "events.jsonl"
    with open(events_path, "w", encoding="utf-8") as fh:
        for event in sim.events():
            fh.write(json.dumps(event) + "\n")
    truth = {row.account_id: row for row in sim.truth()}
    if faces is not None:
        avatar_dir.mkdir(parents=True, exist_ok=True)
        settings.avatars.file_root = faces
        settings.avatars.extra_file_roots = [avatar_dir.resolve()]
    else:
        print("demo: ../shared/data/faces not found; the stream has no avatars", file=sys.stderr)

    url = db or f"sqlite:///{workdir / 'unmask.db'}"
    upgrade(url)
    engine = make_engine(url)
    runner = EmbeddedRunner(engine, build_stages(settings, engine), batch_size=64)
    total = sum(1 for _ in read_jsonl(str(events_path)))
    with tqdm(total=total, unit="event", file=sys.stderr, desc="replay") as bar:
        report = runner.run(read_jsonl(str(events_path)), source="demo", progress=bar.update)

    flagged = {a for a, d in report.latest.items() if d.action != "allow"}
    by_style: dict[str, Counter[str]] = defaultdict(Counter)
    for account_id, row in truth.items():
        style = row.style if row.is_campaign else "honest"
        by_style[style]["accounts"] += 1
        by_style[style]["flagged"] += account_id in flagged
    campaign = {a for a, r in truth.items() if r.is_campaign}
    caught = len(campaign & flagged)
    with engine.connect() as conn:
        queues: dict[str, int] = dict(
            conn.execute(
                sa.select(review_items.c.queue, sa.func.count())
                .where(review_items.c.status == "pending")
                .group_by(review_items.c.queue)
            ).all()
        )
        clusters = conn.execute(
            sa.select(accounts_table.c.cluster_id, sa.func.count().label("n"))
            .where(accounts_table.c.cluster_id.is_not(None))
            .group_by(accounts_table.c.cluster_id)
            .order_by(sa.desc("n"))
            .limit(5)
        ).all()
    engine.dispose()

    print(
        f"\nunmask demo: {report.records} events, {len(truth)} accounts "
        f"({len(campaign)} in simulated campaigns); work dir {workdir}"
    )
    print(f"decisions: {dict(report.decisions)}; dead letters: {dict(report.dead_letters)}")
    print(
        f"campaign accounts flagged: {caught}/{len(campaign)} "
        f"(recall {caught / max(1, len(campaign)):.1%}); honest accounts flagged: "
        f"{len(flagged - campaign)}/{len(truth) - len(campaign)} "
        f"(precision {caught / max(1, len(flagged)):.1%})"
    )
    for style, counts in sorted(by_style.items()):
        print(f"  {style:>10}: {counts['flagged']:5d} of {counts['accounts']:5d} flagged")
    print(f"review queues (pending): {queues}")
    for cluster_id, n in clusters:
        print(f"  cluster {cluster_id}: {n} accounts")
    print(f"\nevents: {events_path}\ndatabase: {url}")
    if serve:
        serve_review(settings, url)
    return 0


def serve_review(settings: Settings, url: str) -> None:
    """Serve the review page over the demo's database, with a one-off demo reviewer."""
    import secrets

    import uvicorn

    from pipeline.review.app import create_app
    from pipeline.review.auth import create_reviewer
    from pipeline.store.db import make_engine

    engine = make_engine(url)
    password = secrets.token_urlsafe(12)
    name = f"demo-{secrets.token_hex(3)}"
    create_reviewer(engine, name, password, "lead", created_by="demo")
    host, port = settings.review.host, settings.review.port
    print(f"\nreview page: http://{host}:{port}/  (user {name}, password {password}); Ctrl-C stops")
    uvicorn.run(create_app(settings, engine), host=host, port=port, log_level="warning")
