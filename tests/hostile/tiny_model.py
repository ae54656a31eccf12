"""A tiny but real ONNX detector for tests: sigmoid of a fixed linear map of the mean colour.

It has the same folder layout (``detector.onnx`` + ``manifest.json``) as the committed model,
so :class:`pipeline.avatars.detector.OnnxDetector` loads it exactly as in production.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VERSION = "tiny-test-1"


def write_tiny_detector(folder: Path, size: int = 32) -> Path:
    """Write the model into ``folder`` and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = numpy_helper.from_array(np.array([[1.5], [-0.5], [0.25]], dtype=np.float32), "w")
    bias = numpy_helper.from_array(np.array([0.1], dtype=np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logit0"]),
            helper.make_node("Add", ["logit0", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["prob"]),
        ],
        "tiny_detector",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "detector.onnx"))
    manifest = {
        "version": VERSION,
        "threshold": 0.5,
        "input": {"size": size, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder
