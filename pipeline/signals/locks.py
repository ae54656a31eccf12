"""Advisory locks that keep the reconcile job and the streaming signals stage from interleaving.

PostgreSQL transaction-level advisory locks: every signals batch holds :data:`CLUSTERS_KEY`
*shared* for its transaction, the reconcile holds it *exclusive* for its own, so a reconcile
waits for the batches in flight and new batches queue behind it (PostgreSQL grants lock
requests in order, so a waiting reconcile is not starved). :data:`RUNNER_KEY` is only ever
*tried*: of the workers of a group whose timers fire together, one runs the reconcile and the
others skip. SQLite has one writer at a time, so these are no-ops there.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

CLUSTERS_KEY = 0x756E6D61736B01
"""Advisory lock over the cluster tables (signal_accounts.cluster_id, signal_clusters, ...)."""
RUNNER_KEY = 0x756E6D61736B02
"""Advisory lock held by the one worker running a reconcile."""


def share_clusters(conn: Connection) -> None:
    """Hold the cluster lock shared until ``conn``'s transaction ends (signals batches)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": CLUSTERS_KEY})


def own_clusters(conn: Connection) -> None:
    """Hold the cluster lock exclusively until ``conn``'s transaction ends (the reconcile);
    waits for every signals batch in flight."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLUSTERS_KEY})


def try_runner(conn: Connection) -> bool:
    """Become the one reconcile runner until ``conn``'s transaction ends; False when another
    session already is (always True on SQLite)."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(
        conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": RUNNER_KEY}).scalar()
    )
