"""A simulated influence campaign pushed through real Kafka ends up as scored clusters, review
units and decisions with evidence (issue #5's end-to-end check)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pipeline.sim.generate import Simulation
from pipeline.store.db import make_engine
from pipeline.store.tables import accounts, decisions, review_items
from tests.integration.conftest import REPO_ROOT, consume


def test_simulated_campaign_becomes_clusters_and_review_units(
    pipeline_env: dict[str, str], worker_factory: Any, tmp_path: Path, shared_dir: Path
) -> None:
    avatars = tmp_path / "avatars"
    avatars.mkdir()
    sim = Simulation(
        1500, 1, 7, avatars=True, faces_dir=shared_dir / "data" / "faces", avatar_dir=avatars
    )
    truth = {row.account_id: row for row in sim.truth()}
    burst = {a for a, r in truth.items() if r.is_campaign and r.style == "burst"}
    assert len(burst) >= 10
    env = dict(pipeline_env, UNMASK_AVATARS__EXTRA_FILE_ROOTS=json.dumps([str(avatars)]))
    path = tmp_path / "campaign.jsonl"
    n = 0
    with open(path, "w") as fh:
        for event in sim.events():
            fh.write(json.dumps(event) + "\n")
            n += 1
    worker = worker_factory(pipeline_env)
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "produce", str(path)],
        env=pipeline_env,
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    )
    got = consume(
        pipeline_env["UNMASK_KAFKA__BOOTSTRAP"],
        pipeline_env["UNMASK_KAFKA__TOPIC_DECISIONS"],
        n,
        timeout=280,
        alive=worker.alive,
    )
    assert len({d["event_id"] for d in got}) == n, worker.log()

    engine = make_engine(env["UNMASK_DATABASE__URL"])
    with engine.connect() as conn:
        cluster_of = dict(
            conn.execute(
                sa.select(accounts.c.account_id, accounts.c.cluster_id).where(
                    accounts.c.cluster_id.is_not(None)
                )
            ).all()
        )
        units = conn.execute(
            sa.select(review_items.c.subject_id, review_items.c.evidence).where(
                review_items.c.subject_type == "cluster"
            )
        ).all()
        flagged = set(
            conn.execute(
                sa.select(decisions.c.account_id).where(decisions.c.action != "allow")
            ).scalars()
        )
    engine.dispose()

    # most burst accounts sit together in one cluster
    main_cluster, members = Counter(cluster_of.get(a) for a in burst).most_common(1)[0]
    assert main_cluster is not None and members >= 0.8 * len(burst)
    # that cluster is one review unit, whose evidence names what binds it
    unit = [ev for subject, ev in units if subject == main_cluster]
    assert len(unit) == 1
    cluster = unit[0]["cluster"]
    assert cluster["cluster_score"] > 0 and cluster["size"] >= members
    assert cluster["binding_features"], "a reviewer must see what binds the cluster"
    # burst accounts are flagged; honest accounts are (almost) never
    honest = {a for a, r in truth.items() if not r.is_campaign}
    assert len(burst & flagged) >= 0.8 * len(burst)
    assert len(honest & flagged) <= 0.01 * len(honest)
    # decisions on the topic carry the cluster reasons
    reasons = [r for d in got if d["account_id"] in burst for r in d["reasons"]]
    assert any("cluster" in r for r in reasons)
