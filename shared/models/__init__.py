"""ONNX model wrappers: a registry of pinned files, one wrapper per model kind, and a router."""

from shared.models.detector import Detection, YuNetDetector
from shared.models.embedder import Embedder
from shared.models.registry import ModelSpec, get_spec, resolve_model_file
from shared.models.router import load_detector, load_embedder

__all__ = [
    "Detection",
    "Embedder",
    "ModelSpec",
    "YuNetDetector",
    "get_spec",
    "load_detector",
    "load_embedder",
    "resolve_model_file",
]
