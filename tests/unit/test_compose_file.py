"""docker-compose.yml cannot run here (no Docker engine); check it parses and is complete."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def load() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_names_every_service_the_worker_needs() -> None:
    services = load()["services"]
    assert {"kafka", "postgres", "worker", "migrate", "topics", "prometheus", "grafana",
            "review"} <= set(services)
    worker = services["worker"]
    assert worker["command"] == ["worker"]
    assert set(worker["depends_on"]) == {"migrate", "topics"}
    env = worker["environment"]
    assert env["UNMASK_KAFKA__BOOTSTRAP"] == "kafka:9092"
    assert env["UNMASK_DATABASE__URL"].startswith("postgresql+psycopg2://")
    assert "ports" not in worker, "workers must not bind host ports, or --scale fails"


def test_avatar_pool_profile_with_the_main_workers_covers_every_agent() -> None:
    from pipeline.settings import AGENTS, parse_agents

    services = load()["services"]
    pool = services["avatar-worker"]
    assert pool["command"] == ["worker", "--agents", "avatar"]
    assert pool["profiles"] == ["avatar-pool"], "the default stack must not start a second pool"
    assert set(pool["depends_on"]) == {"migrate", "topics"}
    assert "ports" not in pool, "workers must not bind host ports, or --scale fails"
    env = pool["environment"]
    assert "UNMASK_WORKER__AGENTS" not in env, "the command line decides the pool's agents"
    for name in ("UNMASK_KAFKA__BOOTSTRAP", "UNMASK_DATABASE__URL", "UNMASK_SECRET_KEY"):
        assert env[name] == services["worker"]["environment"][name]
    agents = services["worker"]["environment"]["UNMASK_WORKER__AGENTS"]
    assert agents.startswith("${UNMASK_WORKER_AGENTS:-") and agents.endswith("}")
    default = agents.removeprefix("${UNMASK_WORKER_AGENTS:-").removesuffix("}")
    assert parse_agents(default) == AGENTS, "the default worker runs every agent"


def test_kafka_service_is_kraft_single_node_on_the_tested_version() -> None:
    kafka = load()["services"]["kafka"]
    assert kafka["image"].endswith(":3.9.1")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]


def test_files_mounted_by_compose_exist() -> None:
    for name, service in load()["services"].items():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (REPO / host).exists(), f"{name} mounts missing {host}"
    assert (REPO / "Dockerfile").exists()


def test_every_topic_the_settings_name_is_defined_in_ops_topics_json() -> None:
    from pipeline.stream.topics import topic_layout

    layout = topic_layout()
    assert layout["topic_events"] == ("accounts.events", 6)
    assert layout["topic_dlq"][1] == 1
    assert len(layout) == 7
