"""Which agents a worker runs, the consumer group each pool joins, and what its app wires."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from pipeline.avatars.manifest import MODEL_DIR as SHIPPED_MODEL_DIR
from pipeline.compose import detector_threshold
from pipeline.settings import AGENTS, Settings, parse_agents, worker_group
from pipeline.types import Envelope


class NamedStage:
    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, batch: Sequence[Envelope]) -> list[Envelope]:
        return list(batch)


def test_parse_agents_orders_and_defaults_to_all() -> None:
    assert parse_agents("all") == AGENTS
    assert parse_agents("") == AGENTS
    assert parse_agents(" decide, Avatar ,avatar") == ("avatar", "decide")


def test_unknown_agent_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="avtar"):
        parse_agents("avtar,decide")
    with pytest.raises(ValidationError, match="unknown worker agent"):
        Settings(worker={"agents": "validate,scores"})


def test_settings_read_the_agent_list_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNMASK_WORKER__AGENTS", "signals,avatar")
    assert Settings().worker.agent_names == ("avatar", "signals")
    monkeypatch.setenv("UNMASK_WORKER__AGENTS", "validate,avatar,dedupe,signals,decide")
    assert Settings().worker.agents == "all"


def test_pools_with_different_agents_join_different_groups() -> None:
    assert worker_group("unmask", AGENTS) == "unmask"
    assert worker_group("unmask", ("avatar",)) == "unmask.avatar"
    rest = worker_group("unmask", ("validate", "dedupe", "signals", "decide"))
    assert rest == "unmask.validate-dedupe-signals-decide"


def test_decide_threshold_without_the_detector_matches_the_manifest(tmp_path: Path) -> None:
    manifest = json.loads((SHIPPED_MODEL_DIR / "manifest.json").read_text())
    files = {manifest.get("model_file", "detector.onnx")}
    want = manifest.get("variants", {}).get(next(iter(files)), {}).get(
        "threshold", manifest["threshold"])
    assert detector_threshold(None) == pytest.approx(float(want))
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"threshold": 0.5, "variants": {"small.onnx": {"threshold": 0.75}}}))
    assert detector_threshold(tmp_path) == 0.5
    assert detector_threshold(tmp_path / "small.onnx") == 0.75


def agent_names(agents: tuple[str, ...]) -> tuple[str, set[str]]:
    from pipeline.stream.app import create_app

    settings = Settings()
    engine = sa.create_engine("sqlite://")
    stages = [NamedStage(a) for a in agents if a != "validate"]
    app = create_app(settings, engine, stages, agents)  # type: ignore[arg-type]
    return app.conf.id, {agent.name.rsplit(".", 1)[-1] for agent in app.agents.values()}


def test_an_avatar_only_app_runs_only_the_avatar_agent() -> None:
    group, names = agent_names(("avatar",))
    assert group == "unmask.avatar"
    assert names == {"avatar"}


def test_the_main_pool_app_runs_every_other_agent() -> None:
    group, names = agent_names(("validate", "dedupe", "signals", "decide"))
    assert group == "unmask.validate-dedupe-signals-decide"
    assert names == {"validate", "dedupe", "signals", "decide"}


def test_an_app_refuses_an_agent_without_its_stage() -> None:
    from pipeline.stream.app import create_app

    with pytest.raises(ValueError, match="dedupe"):
        create_app(Settings(), sa.create_engine("sqlite://"), [NamedStage("avatar")],  # type: ignore[list-item]
                   ("avatar", "dedupe"))


def test_stage_batch_size_comes_from_the_environment_and_must_be_positive(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().worker.batch_size == 1000
    monkeypatch.setenv("UNMASK_WORKER__BATCH_SIZE", "250")
    assert Settings().worker.batch_size == 250
    with pytest.raises(ValidationError, match="at least 1"):
        Settings(worker={"batch_size": 0})


def test_process_stages_setting() -> None:
    assert Settings().worker.process_stage_names == ("signals",)
    worker = Settings(worker={"process_stages": " signals, decide,signals "}).worker
    assert worker.process_stages == "signals,decide"
    assert worker.process_stage_names == ("signals", "decide")
    assert Settings(worker={"process_stages": ""}).worker.process_stage_names == ()
    with pytest.raises(ValidationError, match="unknown stage"):
        Settings(worker={"process_stages": "signals,validate"})
