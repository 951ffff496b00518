"""The exact PRelu rewrite: bit-identical on real faces, off by a setting, refused when it is not exact."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.models import load_embedder, load_liveness
from shared.models.graph_rewrite import exact_session, rewrite_prelu, rewritten_nodes
from shared.models.registry import get_spec, resolve_model_file
from shared.models.router import _make_batch_dynamic
from shared.models.session import build_session
from shared.schemas import FacesResult
from tests.conftest import Photo


def _graph(settings: Settings, name: str, kind: str) -> onnx.ModelProto:
    """The pinned graph with a symbolic batch axis (the liveness graph takes any batch that way too)."""
    spec = get_spec(name, kind)
    model = onnx.load(str(resolve_model_file(spec, settings.model_dir)))
    _make_batch_dynamic(model, spec.dim)
    return model


def _sessions(model: onnx.ModelProto) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    rewritten, replaced = rewrite_prelu(model)
    assert replaced == 33
    return build_session(model.SerializeToString(), 1), build_session(rewritten.SerializeToString(), 1)


def _run(session: ort.InferenceSession, blob: np.ndarray) -> np.ndarray:
    return np.asarray(session.run(None, {session.get_inputs()[0].name: blob})[0])


@pytest.fixture(scope="module")
def real_faces(engine: KYCDeepFace, photos: list[Photo]) -> tuple[np.ndarray, np.ndarray]:
    """Aligned 112x112 faces and 128x128 liveness crops of the detected faces of ../shared/faces."""
    live = load_liveness(engine.settings)
    aligned, crops = [], []
    for photo in photos:
        image = engine.decode(photo.path.read_bytes())
        found, faces = engine.align_faces(image, engine.detect(image), embed_partial=True)
        aligned += [face for _, face in faces]
        crops += [live.preprocess(image.working, found[i].box * image.scale)[0] for i, _ in faces]
    assert len(aligned) >= 32
    return np.stack(aligned), np.stack(crops)


@pytest.mark.parametrize("name", ["mobilefacenet", "yunet-2026may"])
def test_models_without_prelu_are_left_as_they_are(settings: Settings, name: str) -> None:
    spec = get_spec(name, "embedding" if name == "mobilefacenet" else "detector")
    model = onnx.load(str(resolve_model_file(spec, settings.model_dir)))
    rewritten, replaced = rewrite_prelu(model)
    assert replaced == 0 and rewritten is model


def test_rewrite_replaces_every_prelu_and_leaves_the_pinned_graph_alone(settings: Settings) -> None:
    model = _graph(settings, "fr_feature", "embedding")
    before = model.SerializeToString()
    rewritten, replaced = rewrite_prelu(model)
    assert replaced == 33
    assert not any(n.op_type == "PRelu" for n in rewritten.graph.node)
    assert model.SerializeToString() == before  # a copy: the loaded graph is not edited in place
    onnx.checker.check_model(rewritten)


def test_embedder_rewrite_is_bit_identical_on_real_faces(
    settings: Settings, engine: KYCDeepFace, real_faces: tuple[np.ndarray, np.ndarray]
) -> None:
    original, rewritten = _sessions(_graph(settings, "fr_feature", "embedding"))
    blob = engine.embedder.preprocess(real_faces[0])
    for i in range(len(blob)):  # batch 1, every face
        assert np.array_equal(_run(original, blob[i : i + 1]), _run(rewritten, blob[i : i + 1]))
    for i in range(0, len(blob) - 7, 8):  # batch 8
        assert np.array_equal(_run(original, blob[i : i + 8]), _run(rewritten, blob[i : i + 8]))


def test_liveness_rewrite_is_bit_identical_on_real_faces(
    settings: Settings, real_faces: tuple[np.ndarray, np.ndarray]
) -> None:
    original, rewritten = _sessions(_graph(settings, "fr_minifasnet", "liveness"))
    crops = real_faces[1]
    for i in range(len(crops)):
        assert np.array_equal(_run(original, crops[i : i + 1]), _run(rewritten, crops[i : i + 1]))
    for i in range(0, len(crops) - 7, 8):
        assert np.array_equal(_run(original, crops[i : i + 8]), _run(rewritten, crops[i : i + 8]))


def test_rewrite_off_gives_byte_identical_features_and_scores(settings: Settings, photos: list[Photo]) -> None:
    on = KYCDeepFace(settings=settings.model_copy(update={"ort_exact_rewrite": True}))
    off = KYCDeepFace(settings=settings.model_copy(update={"ort_exact_rewrite": False}))
    assert rewritten_nodes(on.embedder._session) == 33 and rewritten_nodes(off.embedder._session) == 0
    assert on.liveness is not None and off.liveness is not None
    assert rewritten_nodes(on.liveness._session) == 33 and rewritten_nodes(off.liveness._session) == 0
    faces = 0
    for photo in photos:
        data = photo.path.read_bytes()
        a, b = on.get_faces(data, liveness=True), off.get_faces(data, liveness=True)
        assert a.model_dump() == b.model_dump(), photo.file
        faces += len(a.faces) if isinstance(a, FacesResult) else 0
    assert faces >= 30


def perturbing_rewrite_double(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A rewrite that is wrong on purpose: the exact one, with one slope off by one part in 1000."""
    rewritten, replaced = rewrite_prelu(model)
    for init in rewritten.graph.initializer:
        if init.name.endswith("/minus_slope"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(1.001), init.name))
            break
    return rewritten, replaced


def test_guard_keeps_the_original_graph_when_outputs_differ(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    model = _graph(settings, "fr_feature", "embedding")
    original = build_session(model.SerializeToString(), 1)
    embedder = load_embedder(settings.model_copy(update={"embedding_model": "fr_feature"}))
    probe = embedder.preprocess(np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8))
    with caplog.at_level(logging.WARNING, logger="shared.models.graph_rewrite"):
        session, used = exact_session(
            model, original, [probe[:1], probe], lambda g: build_session(g, 1), perturbing_rewrite_double, "fr_feature"
        )
    assert session is original and not used
    assert "keeping the original graph" in caplog.text and "fr_feature" in caplog.text
    # The exact rewrite passes the same guard.
    session, used = exact_session(model, original, [probe[:1], probe], lambda g: build_session(g, 1))
    assert used and rewritten_nodes(session) == 33


def test_loader_falls_back_to_the_pinned_graph_when_the_guard_refuses(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Through load_embedder: the guard at batch 1 and the engine's batch (3 here, a cache entry of
    its own) refuses the wrong rewrite, and the embedder runs the pinned graph."""
    from shared.models import graph_rewrite, router

    def guarded_with_double(*args: Any, **kwargs: Any) -> tuple[ort.InferenceSession, bool]:
        return graph_rewrite.exact_session(*args, **{**kwargs, "rewrite": perturbing_rewrite_double})

    monkeypatch.setattr(router, "exact_session", guarded_with_double)
    s = settings.model_copy(update={"embedding_model": "fr_feature", "ort_batch_faces_max": 3})
    with caplog.at_level(logging.WARNING, logger="shared.models.graph_rewrite"):
        embedder = load_embedder(s)
    assert rewritten_nodes(embedder._session) == 0
    assert "keeping the original graph" in caplog.text
    faces = np.random.default_rng(1).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    off = load_embedder(s.model_copy(update={"ort_exact_rewrite": False}))
    assert embedder.embed(faces).tobytes() == off.embed(faces).tobytes()
