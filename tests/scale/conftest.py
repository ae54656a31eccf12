"""Fixtures of the scale-out suite: the reliability suite's pipelines on the shared services
(fresh database, unique topics, worker processes with a tiny real ONNX detector)."""

from __future__ import annotations

from reliability.conftest import (  # noqa: F401 - fixtures re-exported for this folder
    pipeline_factory,
    shared_services,
    tiny_model_dir,
)
