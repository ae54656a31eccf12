"""``unmask score`` on local files: one JSON line per image, refusals as codes, exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hostile import corpus
from hostile.tiny_model import VERSION, write_tiny_detector
from PIL import Image

from pipeline.avatars.detector import OnnxDetector
from pipeline.cli import main


def test_score_prints_one_json_line_per_image(
    tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_tiny_detector(tmp_path / "model")
    photo = shared_dir / "data" / "faces" / "fake" / "rvf_002KDWZBHU.jpg"
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(corpus.png_bomb())
    disguised = tmp_path / "page.jpg"
    disguised.write_bytes(corpus.HTML_AS_JPEG)
    noise = tmp_path / "noise.png"
    corpus.noise_image(96).save(noise)
    big = corpus.write_big_file(tmp_path / "big.jpg")
    paths = [photo, bomb, disguised, noise, tmp_path / "missing.jpg", big]

    status = main(["score", "--model", str(model), "--hashes", *map(str, paths)])

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert [line["path"] for line in lines] == [str(p) for p in paths]
    face, refused_bomb, refused_page, plain, missing, too_big = lines
    expected = OnnxDetector(model, prefer_gpu=False).score_batch(
        [Image.open(photo).convert("RGB")]
    )[0]
    assert face["score"] == pytest.approx(expected, abs=1e-5)
    assert face["cnn_score"] == pytest.approx(expected, abs=1e-5)
    assert face["model_version"] == VERSION
    assert face["face_found"] is True and len(face["eyes"]) == 2
    assert face["eye_offset"] < 0.03
    assert face["ai_generated"] == (face["score"] >= 0.5)
    assert {"phash", "pdq", "face"} <= set(face["hashes"])
    assert refused_bomb["error"] == "too_many_pixels"
    assert refused_page["error"] == "not_an_image"
    assert plain["face_found"] is False and plain["eye_offset"] is None
    assert missing["error"] == "not_found"
    assert too_big["error"] == "too_large"


def test_score_exits_zero_when_everything_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_tiny_detector(tmp_path / "model")
    image = tmp_path / "a.webp"
    corpus.noise_image(40).save(image, format="WEBP")
    assert main(["score", "--model", str(model / "detector.onnx"), str(image)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert 0.0 < json.loads(line)["score"] < 1.0
