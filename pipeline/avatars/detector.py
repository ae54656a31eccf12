"""Thin onnxruntime wrapper around the committed AI-face detector.

Loads the ONNX file named by ``model/manifest.json`` (``model_file``: the int8 or the fp32 export,
see docs/model.md) with the manifest's input size, normalisation, version, calibrated thresholds
of that file and optional fusion coefficients, picks an execution provider once at start,
and scores batches of decoded images. ``score_batch`` is the CNN's probability; ``fuse`` turns
it, with the face geometry, into the shipped probability when the manifest carries a ``fusion``
block (``pipeline.avatars.fusion``). All image arithmetic lives in the pure
``pipeline.avatars.preprocess``; this module only does the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from pipeline.avatars.face import FaceFinding
from pipeline.avatars.fusion import Fusion, geometry
from pipeline.avatars.manifest import FP32_MODEL_FILE as FP32_MODEL_FILE
from pipeline.avatars.manifest import MODEL_DIR, choose, locate
from pipeline.avatars.preprocess import PreprocessSpec, preprocess_batch
from pipeline.settings import AvatarSettings

DEFAULT_MODEL_DIR = MODEL_DIR
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

log = logging.getLogger(__name__)


def _session_options(intra_op_threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if intra_op_threads is not None and intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _open_session(
    model_path: Path, prefer_gpu: bool, intra_op_threads: int | None
) -> ort.InferenceSession:
    """CUDA when it is offered and really initialises, else CPU; never raises for a missing GPU."""
    if prefer_gpu and CUDA in ort.get_available_providers():
        try:
            session = ort.InferenceSession(
                str(model_path), _session_options(intra_op_threads), providers=[CUDA, CPU]
            )
            if session.get_providers()[0] != CUDA:
                log.warning("CUDAExecutionProvider listed but did not initialise; using CPU")
            return session
        except Exception as error:  # noqa: BLE001 - any CUDA start-up failure falls back to CPU
            log.warning("CUDAExecutionProvider failed to start (%s); using CPU", error)
    return ort.InferenceSession(
        str(model_path), _session_options(intra_op_threads), providers=[CPU]
    )


class OnnxDetector:
    """Probability that a face image is AI-generated (GAN), from the committed ONNX model.

    Construction reads the model and manifest from disk and starts an onnxruntime session
    (blocking, ~0.1 s on CPU); it raises FileNotFoundError / KeyError for a missing or malformed
    model folder. ``model_file`` picks one ONNX file of the folder (default: the manifest's
    ``model_file``, else ``detector.onnx``); its thresholds come from the manifest's ``variants``
    entry for that file when there is one. ``intra_op_threads`` None or 0 leaves onnxruntime's
    default (one thread per core). ``score_batch`` is synchronous and CPU/GPU bound: call it off
    the event loop. One instance may be shared by threads (onnxruntime sessions are thread-safe
    for ``run``).
    """

    def __init__(
        self,
        model_dir: Path = DEFAULT_MODEL_DIR,
        *,
        prefer_gpu: bool = True,
        intra_op_threads: int | None = None,
        model_file: str | None = None,
    ) -> None:
        choice = choose(model_dir, model_file)
        self._manifest: dict[str, Any] = choice.manifest
        self._spec = PreprocessSpec.from_manifest(self._manifest)
        self._model_file = choice.model_file
        self._threshold = choice.threshold
        self._cnn_threshold = choice.cnn_threshold
        self._fusion = Fusion.of_model(self._manifest)
        self._version = str(self._manifest["version"])
        self._session = _open_session(model_dir / self._model_file, prefer_gpu, intra_op_threads)
        self._input_name = self._session.get_inputs()[0].name
        log.info(
            "avatar detector %s (%s) loaded with %s, %d intra-op threads "
            "(input %dpx, threshold %.4f, fusion %s)",
            self._version,
            self._model_file,
            self.provider,
            self.intra_op_threads,
            self._spec.input_size,
            self._threshold,
            "on" if self._fusion is not None else "off",
        )

    @property
    def model_version(self) -> str:
        """The ``version`` string of the manifest, for provenance in scored events."""
        return self._version

    @property
    def model_file(self) -> str:
        """The ONNX file of the model folder in use (``detector-int8.onnx``, ``detector.onnx``)."""
        return self._model_file

    @property
    def intra_op_threads(self) -> int:
        """Intra-op threads of the running session as onnxruntime reports them (0: its default)."""
        return int(self._session.get_session_options().intra_op_num_threads)

    @property
    def threshold(self) -> float:
        """Shipped (fused, when fusion is on) score above which an avatar counts as AI-generated
        (calibrated at 1% FPR on validation reals)."""
        return self._threshold

    @property
    def cnn_threshold(self) -> float:
        """The same calibration for the raw CNN probability of ``score_batch``."""
        return self._cnn_threshold

    @property
    def fused(self) -> bool:
        """Whether ``fuse`` combines the CNN score with face geometry (else it is the identity)."""
        return self._fusion is not None

    def fuse(
        self,
        cnn_scores: Sequence[float],
        findings: Sequence[FaceFinding],
        sizes: Sequence[tuple[int, int]],
    ) -> list[float]:
        """Shipped probability per image from ``score_batch`` output, face findings and the
        (width, height) the findings were measured on; the CNN scores unchanged without fusion.
        Raises ValueError when the three sequences differ in length."""
        if not len(cnn_scores) == len(findings) == len(sizes):
            raise ValueError("cnn_scores, findings and sizes differ in length")
        if self._fusion is None:
            return [float(s) for s in cnn_scores]
        rows = [geometry(f, size) for f, size in zip(findings, sizes, strict=True)]
        return self._fusion.fuse(cnn_scores, rows)

    @property
    def provider(self) -> str:
        """The execution provider actually in use."""
        return str(self._session.get_providers()[0])

    @property
    def spec(self) -> PreprocessSpec:
        """Input size and normalisation, as read from the manifest."""
        return self._spec

    def score_array(self, batch: np.ndarray) -> list[float]:
        """Score an already preprocessed float32 (N, 3, S, S) batch."""
        if len(batch) == 0:
            return []
        (probs,) = self._session.run(None, {self._input_name: batch})
        return [float(p) for p in np.asarray(probs).reshape(-1)]

    def score_batch(self, images: Sequence[Image.Image]) -> list[float]:
        """Probability of AI-generated for each image, in input order (empty in, empty out).

        Images may be any Pillow mode and size; they are centre-cropped to a square and resized
        exactly as in training. Pass the face crop or the whole avatar.
        """
        return self.score_array(preprocess_batch(images, self._spec))


def open_detector(avatars: AvatarSettings, *, prefer_gpu: bool = True) -> OnnxDetector:
    """The detector a worker runs, from its settings: ``avatars.model_path`` (a model folder, or
    one ``.onnx`` file of a folder, which is then the file loaded; None: the shipped model and
    its default file) with ``avatars.onnx_intra_op_threads`` intra-op threads."""
    folder, model_file = locate(avatars.model_path)
    return OnnxDetector(
        folder,
        prefer_gpu=prefer_gpu,
        intra_op_threads=avatars.onnx_intra_op_threads,
        model_file=model_file,
    )


def set_opencv_threads(count: int) -> None:
    """Threads OpenCV may use for the face step's Haar cascades (process-wide, blocking-free);
    0 or less leaves OpenCV's default."""
    if count > 0:
        import cv2

        cv2.setNumThreads(count)
