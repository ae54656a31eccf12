"""The pipeline's topics: each ``KafkaSettings.topic_*`` field with its default name and its
partition count from ``ops/topics.json`` (the one definition ``ops/create_topics.py`` applies)."""

from __future__ import annotations

import json
from functools import cache

from pipeline.settings import REPO_ROOT, KafkaSettings

TOPICS_FILE = REPO_ROOT / "ops" / "topics.json"


@cache
def topic_layout() -> dict[str, tuple[str, int]]:
    """``{"topic_events": ("accounts.events", 6), ...}`` for every topic field of the settings.

    Raises ``KeyError`` when a topic the settings name is missing from ``ops/topics.json``.
    """
    defined = {
        t["name"]: int(t["partitions"]) for t in json.loads(TOPICS_FILE.read_text())["topics"]
    }
    defaults = KafkaSettings()
    layout = {}
    for field in KafkaSettings.model_fields:
        if field.startswith("topic_"):
            name = getattr(defaults, field)
            layout[field] = (name, defined[name])
    return layout
