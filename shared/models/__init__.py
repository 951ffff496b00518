"""ONNX model wrappers: a registry of pinned files, one wrapper per model kind, and a router."""

from shared.models.detector import Detection, YuNetDetector
from shared.models.embedder import Embedder
from shared.models.liveness import LivenessScorer
from shared.models.registry import ModelSpec, get_spec, resolve_model_file
from shared.models.router import load_detector, load_embedder, load_liveness

__all__ = [
    "Detection",
    "Embedder",
    "LivenessScorer",
    "ModelSpec",
    "YuNetDetector",
    "get_spec",
    "load_detector",
    "load_embedder",
    "load_liveness",
    "resolve_model_file",
]
