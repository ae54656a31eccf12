"""One typed settings object, read from the environment once and passed in.

Every field is documented with its unit; this class is the configuration reference.
Environment variables use the prefix ``UNMASK_`` and ``__`` between group and field,
for example ``UNMASK_KAFKA__BOOTSTRAP=127.0.0.1:19092``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET = "development-only-secret-change-me"
AGENTS = ("validate", "avatar", "dedupe", "signals", "decide")
"""The worker's agents in the order an event walks them."""


def parse_agents(text: str) -> tuple[str, ...]:
    """The agents named by a comma list (``"all"`` or empty: every agent), in walk order.

    Raises ValueError naming any unknown agent.
    """
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    if not names or names == {"all"}:
        return AGENTS
    unknown = sorted(names - set(AGENTS))
    if unknown:
        raise ValueError(
            f"unknown worker agent(s) {', '.join(unknown)}; choose among {', '.join(AGENTS)} "
            "(comma separated) or all"
        )
    return tuple(a for a in AGENTS if a in names)


def worker_group(consumer_group: str, agents: tuple[str, ...]) -> str:
    """The consumer group (Faust app id) of a worker running ``agents``: ``consumer_group``
    when it runs every agent, else ``<consumer_group>.<agent>-<agent>...`` (for example
    ``unmask.avatar``), because every member of one group must run the same agents."""
    if tuple(agents) == AGENTS:
        return consumer_group
    return f"{consumer_group}.{'-'.join(agents)}"


class KafkaSettings(BaseModel):
    bootstrap: str = "127.0.0.1:19092"
    """Kafka bootstrap servers, comma separated host:port."""
    consumer_group: str = "unmask"
    """Consumer group (Faust app id) shared by all workers."""
    topic_events: str = "accounts.events"
    """Input topic of account events (key = account_id)."""
    topic_dlq: str = "accounts.dlq"
    """Dead-letter topic: raw bytes of refused events plus a coded reason."""
    topic_validated: str = "accounts.validated.v1"
    topic_scored: str = "avatars.scored.v1"
    topic_matched: str = "avatars.matched.v1"
    topic_signals: str = "accounts.signals.v1"
    topic_decisions: str = "enforcement.decisions"
    """Output topic of enforcement decisions."""
    partitions: int = 6
    """Partitions of the internal topics (must match ops/topics.json)."""


class DatabaseSettings(BaseModel):
    url: str = f"sqlite:///{REPO_ROOT / 'unmask.db'}"
    """SQLAlchemy URL. SQLite is the embedded default; production uses PostgreSQL."""
    pool_size: int = 5
    """Connections kept open per process (PostgreSQL only)."""
    retry_max_seconds: float = 30.0
    """Upper bound of the exponential back-off while the database is unreachable, seconds."""


class AvatarSettings(BaseModel):
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host names avatars may be fetched from (exact match or leading-dot suffix)."""
    allow_private_hosts: list[str] = Field(default_factory=list)
    """Hosts allowed even though they resolve to loopback/private ranges (tests, on-prem CDNs)."""
    file_root: Path | None = None
    """Directory below which file:// avatar URLs may be read (demo and replays); None refuses file://."""
    extra_file_roots: list[Path] = Field(default_factory=list)
    """Further directories allowed for file:// avatars (only when file_root is set)."""
    connect_timeout_s: float = 2.0
    """Connect timeout of an avatar fetch, seconds."""
    read_timeout_s: float = 5.0
    """Total read deadline of an avatar fetch, seconds."""
    max_bytes: int = 5_000_000
    """Largest avatar accepted, bytes."""
    max_pixels: int = 40_000_000
    """Largest decoded image accepted, pixels (decompression bombs)."""
    max_redirects: int = 3
    """Redirects followed, each re-checked against the allow-list."""
    batch_size: int = 32
    """Micro-batch size of the ONNX scorer."""
    fetch_workers: int = 8
    """Threads fetching and decoding the avatars of one micro-batch concurrently."""
    model_path: Path | None = None
    """ONNX detector; None uses the model shipped in the package."""
    onnx_intra_op_threads: int = 1
    """Intra-op threads of the detector's onnxruntime session, count; 0 lets onnxruntime use one
    per core. One worker process per core is the scaling model (docs/scaling.md), so 1."""
    opencv_threads: int = 1
    """Threads OpenCV may use in the face step (process-wide), count; 0 keeps OpenCV's default
    (all cores). 1 for the same reason as ``onnx_intra_op_threads``."""


class DedupeSettings(BaseModel):
    radius: int = 2
    """Hamming radius (bits) within which two 64-bit pHashes are the same photo on their own
    (docs/dedupe.md, matching rule; at most 5 with the 3-band index schema before probes grow)."""
    verified_radius: int = 4
    """Hamming radius (bits) of the pHash within which a candidate is the same photo when its
    PDQ hash also lies within ``pdq_radius`` (at most 5, as ``radius``)."""
    pdq_radius: int = 80
    """Hamming radius (bits of 256) of the PDQ check on candidates between ``radius`` and
    ``verified_radius``; negative turns that clause off."""
    candidate_radius: int = 4
    """Hamming radius (bits) of the pHash family, crop windows included, within which a
    candidate is checked by keypoints and correlation of the thumbnails (docs/dedupe.md);
    negative turns that clause off. Band probe values per band and query: 1 up to radius 2,
    22-23 for 3-5, 254 for 6-8 (the PostgreSQL lookup's cost grows with them)."""
    window_radius: int = 2
    """Hamming radius (bits) at which the query's own crop windows (``phash_q*``) are searched,
    in the same statement; their hits are checked like ``candidate_radius`` ones; negative
    turns them off."""
    max_verifications: int = 8
    """At most this many candidate photos (per orientation) are checked by keypoints and
    correlation per lookup, nearest first; the rest are dropped (count)."""
    min_inliers: int = 12
    """Keypoint inliers (count) of the affine fit a verified candidate needs."""
    min_ncc: float = 0.80
    """High-pass normalised correlation (-1..1) of the aligned thumbnails a verified candidate
    needs."""
    reuse_window_hours: float = 168.0
    """Window in which the same photo on several accounts becomes a cluster signal, hours."""


class SignalSettings(BaseModel):
    windows_hours: list[float] = Field(default_factory=lambda: [1.0, 24.0, 168.0])
    """Rolling windows over which feature counts are read, hours."""
    bucket_minutes: int = 10
    """Width of one time bucket of the rolling windows, minutes."""
    retention_days: float = 30.0
    """Buckets and raw events older than this are deleted by the retention job, days."""
    link_threshold: float = 2.2
    """Weighted shared evidence at or above which two accounts are linked (rarity weights,
    docs/clusters.md); above 2.0 so that one shared outlet link alone does not link."""
    avatar_pair_bonus: float = 1.25
    """Evidence added to a pair whose two avatars are both AI-generated or reused photos."""
    bonus_min_suspect_share: float = 0.25
    """The avatar-pair bonus needs a shared value whose holders in the long window are at least
    this share suspect (AI face or reused photo): a campaign outlet's holders are ~0.9 suspect,
    an honest value's run at the detector's false-positive base rate (~0.01), so two false
    positives that merely share a popular domain get no bonus (docs/clusters.md); 0 gives it to
    every suspect pair, share of holders (0..1)."""
    flag_threshold: float = 0.6
    """Cluster score (0..1) at or above which a cluster's accounts count as flagged
    (calibrated in docs/clusters.md)."""
    ai_face_threshold: float = 0.5
    """Avatar score (0..1) at or above which a member counts as an AI face in the cluster score."""
    burst_minutes: float = 60.0
    """Two linked accounts whose features appeared within this many minutes are a burst, minutes."""
    max_partners: int = 5000
    """Values shown by more accounts than this in the long window are not searched for link
    partners, accounts."""
    recluster_interval_s: float = 0.0
    """Period of the workers' reconcile job (order-independent re-clustering, revised decisions;
    docs/clusters.md), seconds; one worker of a group runs each round; 0 (the default) disables
    the timer and ``unmask recluster`` runs it by hand or from a scheduler. Off by default: a
    round re-clusters every stored account while holding the cluster lock (the stream pauses for
    its duration, ~1.2x the time it took to stream those events), and its scores have not been
    recalibrated against the 0.6 flag threshold (docs/clusters.md)."""


class DecideSettings(BaseModel):
    policy_path: Path | None = None
    """Policy file; None uses pipeline/decide/policy.yaml."""


class WorkerSettings(BaseModel):
    agents: str = "all"
    """Agents this worker runs, comma separated among validate, avatar, dedupe, signals, decide
    (``all``: every one; ``unmask worker --agents`` overrides it). A worker that runs only some
    agents joins the consumer group ``<kafka.consumer_group>.<agent>-<agent>...`` (for example
    ``unmask.avatar``), so pools with different agent sets never share a group; together the
    pools must cover every agent (docs/scaling.md)."""
    batch_size: int = 1000
    """Most events the dedupe, signals and decide agents take from their topic per micro-batch.
    A batch closes 50 ms after the agent starts waiting even when it holds fewer, so a large
    maximum costs no latency when events trickle in; under a backlog batches fill up, and
    fewer, larger transactions sustain more events/s (docs/benchmarks.md, "Throughput as the
    worker runs the two stages": 1,285 events/s at 200, ~1,900-2,000 at 1,000). The avatar
    agent batches by ``avatars.batch_size``."""
    process_stages: str = "signals"
    """Stages this worker runs in a child process each (comma separated among avatar, dedupe,
    signals, decide; empty: none), so that their Python never waits for the interpreter lock
    held by another stage thread or the event loop (``pipeline.stream.stage_process``). The
    signals stage, the critical path of a worker that runs signals and decide, is one by
    default (docs/benchmarks.md, "Through Kafka, sixth pass")."""

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int) -> int:
        if value < 1:
            raise ValueError("worker.batch_size must be at least 1")
        return value

    @field_validator("process_stages")
    @classmethod
    def _known_stages(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = sorted(set(names) - {"avatar", "dedupe", "signals", "decide"})
        if unknown:
            raise ValueError(f"worker.process_stages: unknown stage(s) {', '.join(unknown)}")
        return ",".join(dict.fromkeys(names))

    @property
    def process_stage_names(self) -> tuple[str, ...]:
        """The stages run in child processes."""
        return tuple(n for n in self.process_stages.split(",") if n)

    @field_validator("agents")
    @classmethod
    def _known_agents(cls, value: str) -> str:
        agents = parse_agents(value)
        return "all" if agents == AGENTS else ",".join(agents)

    @property
    def agent_names(self) -> tuple[str, ...]:
        """The configured agents, in walk order."""
        return parse_agents(self.agents)


class ReviewSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8088
    lease_seconds: int = 300
    """How long a claimed review item stays with its reviewer, seconds."""
    image_dir: Path = REPO_ROOT / "var" / "images"
    """Content-addressed store of avatar bytes (files named by sha256) that the review page
    serves."""
    session_max_age_s: int = 8 * 3600
    """Lifetime of a reviewer's signed session cookie, seconds."""
    secure_cookies: bool = False
    """Send the session cookie only over HTTPS (set true behind TLS)."""
    publish_interval_s: float = 1.0
    """Pause between outbox rounds that send unpublished reviewer decisions to Kafka, seconds."""
    publish_decisions: bool = True
    """Run the outbox publisher inside ``unmask review`` (false: publish with
    ``unmask review-publish``)."""


class Settings(BaseSettings):
    """All configuration of unmask. Built once by the composition root and passed in."""

    model_config = SettingsConfigDict(
        env_prefix="UNMASK_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "test", "production"] = "development"
    """Where this runs; production refuses default secrets."""
    log_level: str = "INFO"
    """Python logging level name."""
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    """Key for HMAC of personal data and for signing reviewer sessions."""
    metrics_port: int = 9108
    """Port of the worker's /metrics, /healthz and /readyz endpoints."""
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    avatars: AvatarSettings = Field(default_factory=AvatarSettings)
    dedupe: DedupeSettings = Field(default_factory=DedupeSettings)
    signals: SignalSettings = Field(default_factory=SignalSettings)
    decide: DecideSettings = Field(default_factory=DecideSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret_key.get_secret_value() == DEV_SECRET:
            raise ValueError("UNMASK_SECRET_KEY must be set outside development")
        return self
