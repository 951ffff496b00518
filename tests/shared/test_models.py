"""Model files: pinned by sha256, routed by their graph, batched in memory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import ModelError
from shared.models import load_detector, load_embedder
from shared.models.registry import BUILTIN


def test_missing_model_names_file_place_and_source(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        KYCDeepFace(settings=settings.model_copy(update={"model_dir": tmp_path}))
    msg = err.value.message
    assert "face_detection_yunet_2026may.onnx" in msg and str(tmp_path) in msg
    assert "opencv_zoo" in msg and BUILTIN[0].sha256 in msg


def test_wrong_checksum_is_refused(settings: Settings, tmp_path: Path) -> None:
    for spec in BUILTIN:
        shutil.copy(settings.model_dir / spec.file, tmp_path / spec.file)
    with (tmp_path / BUILTIN[1].file).open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00\x01\x02\x03")
    s = settings.model_copy(update={"model_dir": tmp_path})
    load_detector(s)  # the untouched detector still loads
    with pytest.raises(ModelError) as err:
        load_embedder(s)
    assert "sha256" in err.value.message and BUILTIN[1].file in err.value.message


def test_registry_file_adds_a_model_by_configuration(settings: Settings, tmp_path: Path) -> None:
    """An operator registers another embedding model by JSON; here the same weights under a new name."""
    spec = BUILTIN[1].model_dump()
    spec["name"] = "mobilefacenet-copy"
    registry = tmp_path / "models.json"
    registry.write_text(json.dumps([spec]))
    s = settings.model_copy(update={"embedding_model": "mobilefacenet-copy", "model_registry_file": registry})
    embedder = load_embedder(s)
    assert embedder.model_id.startswith("mobilefacenet-copy@")


def test_router_refuses_a_model_of_the_wrong_kind(settings: Settings, tmp_path: Path) -> None:
    """The embedding network registered as a detector: the router sees it lacks YuNet's outputs."""
    spec = BUILTIN[1].model_dump()
    spec.update(name="not-a-detector", kind="detector")
    registry = tmp_path / "models.json"
    registry.write_text(json.dumps([spec]))
    s = settings.model_copy(update={"detector_model": "not-a-detector", "model_registry_file": registry})
    with pytest.raises(ModelError) as err:
        load_detector(s)
    assert "YuNet" in err.value.message


def test_unknown_model_name(settings: Settings) -> None:
    with pytest.raises(ModelError) as err:
        load_embedder(settings.model_copy(update={"embedding_model": "nope"}))
    assert "mobilefacenet" in err.value.message


def test_batched_embedding_equals_one_at_a_time(engine: KYCDeepFace) -> None:
    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    batch = engine.embedder.embed(faces)
    singles = np.concatenate([engine.embedder.embed(faces[i : i + 1]) for i in range(5)])
    assert batch.shape == (5, 128)
    assert np.allclose(batch, singles, atol=1e-5)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_sessions_are_created_once_per_process(settings: Settings) -> None:
    a, b = load_embedder(settings), load_embedder(settings)
    assert a._session is b._session


def test_fr_feature_batches_in_memory_and_takes_bgr_minus_127_over_128(settings: Settings) -> None:
    """The 512-d model: its pinned file has batch 1; the loaded graph takes any batch, fed as the
    manifest says (BGR, (x - 127) / 128)."""
    embedder = load_embedder(settings.model_copy(update={"embedding_model": "fr_feature"}))
    rng = np.random.default_rng(5)
    faces = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    blob = embedder.preprocess(faces)
    expected = (faces.transpose(0, 3, 1, 2).astype(np.float32) - 127.0) / 128.0
    assert np.allclose(blob, expected, atol=1e-5)
    batch = embedder.embed(faces)
    singles = np.concatenate([embedder.embed(faces[i : i + 1]) for i in range(3)])
    assert batch.shape == (3, 512)
    assert np.allclose(batch, singles, atol=1e-5)
