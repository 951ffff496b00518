"""Pick the wrapper for an ONNX file from its inputs and outputs, and prepare it for batching."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from shared.config import Settings
from shared.errors import ModelError
from shared.models.detector import YuNetDetector
from shared.models.embedder import Embedder
from shared.models.graph_rewrite import exact_session
from shared.models.liveness import LivenessScorer
from shared.models.registry import ModelSpec, get_spec, resolve_model_file
from shared.models.session import build_session, cached_session, create_session

_YUNET_OUTPUTS = {f"{k}_{s}" for s in (8, 16, 32) for k in ("cls", "obj", "bbox", "kps")}
# An image -> vector network is a classifier (liveness: a few class logits) or an embedder (a
# descriptor of 64+ values); nothing in between is a model we know how to drive.
_MAX_CLASSES = 16
_MIN_EMBEDDING_DIM = 64
# The load-time check of the exact PRelu rewrite feeds both graphs the same pseudo-random faces.
_PROBE_SEED = 27


def _load(spec: ModelSpec, settings: Settings) -> onnx.ModelProto:
    path = resolve_model_file(spec, settings.model_dir)
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends; all mean "not a usable model"
        raise ModelError(f"model file {path} is not a readable ONNX model: {exc}") from None


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _make_batch_dynamic(model: onnx.ModelProto, dim: int) -> None:
    """In memory only: a symbolic batch axis, and ``Reshape [1, -1]`` constants made ``[-1, dim]``.

    Exporters often bake batch 1 into the flatten before the last layer; the file on disk stays as
    pinned, so its checksum still holds.
    """
    graph = model.graph
    for value in (*graph.input, *graph.output):
        shape = value.type.tensor_type.shape
        if shape.dim:
            shape.dim[0].dim_param = "batch"
    reshape_shapes = {n.input[1] for n in graph.node if n.op_type == "Reshape" and len(n.input) > 1}
    for init in graph.initializer:
        if init.name in reshape_shapes:
            arr = numpy_helper.to_array(init)
            if arr.ndim == 1 and arr.size == 2 and arr[0] == 1 and arr[1] == -1:
                init.CopyFrom(numpy_helper.from_array(np.array([-1, dim], dtype=arr.dtype), init.name))


def load_detector(settings: Settings) -> YuNetDetector:
    spec = get_spec(settings.detector_model, "detector", settings.model_registry_file)
    model = _load(spec, settings)
    outputs = {o.name for o in model.graph.output}
    if not outputs >= _YUNET_OUTPUTS:
        raise ModelError(f"detector {spec.file} does not have YuNet's outputs; cannot drive it")
    session = create_session(
        spec.model_id, model.SerializeToString(), settings.onnx_threads(), tuple(settings.ort_providers)
    )
    return YuNetDetector(session, settings.det_score_threshold, settings.det_nms_iou, settings.det_max_faces)


def _check_image_to_vector(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Embedders and liveness scorers both map one (N,3,H,W) image to one (N,D) vector."""
    init_names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    outputs = model.graph.output
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{spec.kind} model {spec.file} must have one input and one output")
    in_dims, out_dims = _dims(inputs[0]), _dims(outputs[0])
    if len(in_dims) != 4 or in_dims[1] != 3 or len(out_dims) != 2:
        raise ModelError(f"{spec.kind} model {spec.file} is not image (N,3,H,W) -> vector (N,D)")
    if in_dims[2:] != list(spec.input_size)[::-1] and all(isinstance(d, int) for d in in_dims[2:]):
        raise ModelError(f"{spec.kind} model {spec.file} takes {in_dims[2:]}, registry says {spec.input_size}")
    width = out_dims[1] if isinstance(out_dims[1], int) else spec.dim
    if width != spec.dim:
        raise ModelError(f"{spec.kind} model {spec.file} outputs {width} values, registry says {spec.dim}")
    # The graph, not only the registry entry, decides the wrapper: class logits are never embedded.
    looks_like = "liveness" if width <= _MAX_CLASSES else "embedding" if width >= _MIN_EMBEDDING_DIM else None
    if looks_like != spec.kind:
        raise ModelError(
            f"{spec.file} outputs {width} values per image: "
            + (f"a {looks_like} model, not {spec.kind}" if looks_like else "neither class logits nor an embedding")
        )


def _probe_faces(batch: int, size: tuple[int, int]) -> np.ndarray:
    """``batch`` fixed pseudo-random BGR uint8 images of ``size`` (width, height)."""
    return np.random.default_rng(_PROBE_SEED).integers(0, 256, (batch, size[1], size[0], 3), dtype=np.uint8)


def _session(
    spec: ModelSpec,
    model: onnx.ModelProto,
    settings: Settings,
    probes: Callable[[ort.InferenceSession], list[np.ndarray]],
    batches: list[int],
) -> ort.InferenceSession:
    """The model's session, on the exact PRelu rewrite of its graph unless that is off or refused.

    ``probes`` makes the guard's inputs, one per size in ``batches``, with the wrapper's own
    preprocessing, from a session on the original graph. The guard runs when the session is first
    built; a session checked at other batch sizes is another cache entry.
    """
    threads, providers = settings.onnx_threads(), tuple(settings.ort_providers)

    def build() -> ort.InferenceSession:
        original = build_session(model.SerializeToString(), threads, providers)
        if not settings.ort_exact_rewrite:
            return original
        session, _ = exact_session(
            model, original, probes(original), lambda graph: build_session(graph, threads, providers), name=spec.name
        )
        return session

    checked = "/".join(map(str, batches))
    key = f"{spec.model_id}+exact-prelu@{checked}" if settings.ort_exact_rewrite else spec.model_id
    return cached_session(key, threads, providers, build)


def load_embedder(settings: Settings) -> Embedder:
    spec = get_spec(settings.embedding_model, "embedding", settings.model_registry_file)
    model = _load(spec, settings)
    _check_image_to_vector(model, spec)
    _make_batch_dynamic(model, spec.dim)
    # One call at a time and a full one, as the engine makes them (a flip doubles the batch).
    batches = sorted({1, settings.ort_batch_faces() * (2 if settings.embed_flip else 1)})

    def probes(original: ort.InferenceSession) -> list[np.ndarray]:
        return [Embedder(original, spec).preprocess(_probe_faces(b, spec.input_size)) for b in batches]

    return Embedder(_session(spec, model, settings, probes, batches), spec, flip=settings.embed_flip)


def load_liveness(settings: Settings) -> LivenessScorer:
    """The liveness scorer: a (1,3,H,W) face-in-context crop -> class logits, real first."""
    spec = get_spec(settings.liveness_model, "liveness", settings.model_registry_file)
    model = _load(spec, settings)
    _check_image_to_vector(model, spec)

    def probes(original: ort.InferenceSession) -> list[np.ndarray]:
        # The scorer runs one face per call; the probe's face box covers the middle of the image.
        image = _probe_faces(1, (3 * spec.input_size[0], 3 * spec.input_size[1]))[0]
        box = np.array([1, 1, 2, 2], np.float32) * np.array(spec.input_size * 2, np.float32)
        return [LivenessScorer(original, spec).preprocess(image, box)]

    return LivenessScorer(_session(spec, model, settings, probes, [1]), spec)
