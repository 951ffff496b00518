"""Portable face features: base64 of a small versioned binary.

Layout (little-endian)::

    b"KF"  magic
    u8     format version (1)
    u8     length of the model id
    ...    model id, ASCII
    u16    dimension D
    D*f4   L2-normalised float32 vector

The model id travels with the vector so features of two different models are never compared.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

import numpy as np

from shared.errors import FeaturesError

_MAGIC = b"KF"
_VERSION = 1
_MAX_DIM = 4096
_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Features:
    """A decoded features string; ``text`` is the string itself, so it travels without re-encoding."""

    model_id: str
    vector: np.ndarray  # float32, shape (D,), unit norm
    text: str = ""

    def __str__(self) -> str:
        return self.text


def encode(model_id: str, vector: np.ndarray) -> str:
    """Serialise one embedding; the vector is L2-normalised here so every stored copy is."""
    mid = model_id.encode("ascii")
    if not 0 < len(mid) < 256:
        raise FeaturesError("model id must be 1-255 ASCII characters")
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise FeaturesError("cannot encode a zero or non-finite embedding")
    v = (v / norm).astype("<f4")
    blob = _MAGIC + struct.pack("<BB", _VERSION, len(mid)) + mid + struct.pack("<H", v.size) + v.tobytes()
    return base64.b64encode(blob).decode("ascii")


def decode(features: str | bytes | Features) -> Features:
    """Parse and check a features string (one already decoded is returned as it is).

    Raises:
        FeaturesError: naming what is wrong.
    """
    if isinstance(features, Features):
        return features
    text = features if isinstance(features, str) else ""
    if isinstance(features, str):
        features = features.encode("ascii", errors="replace")
    if not isinstance(features, bytes) or not features:
        raise FeaturesError("features must be a non-empty base64 string")
    try:
        blob = base64.b64decode(features, validate=True)
    except (binascii.Error, ValueError):
        raise FeaturesError("features are not valid base64") from None
    if len(blob) < 6 or blob[:2] != _MAGIC:
        raise FeaturesError("features are not a KYCDeepFace features blob (bad magic)")
    version, mid_len = struct.unpack_from("<BB", blob, 2)
    if version != _VERSION:
        raise FeaturesError(f"unsupported features format version {version}")
    head = 4 + mid_len
    if len(blob) < head + 2:
        raise FeaturesError("features blob is truncated")
    try:
        model_id = blob[4:head].decode("ascii")
    except UnicodeDecodeError:
        raise FeaturesError("features carry a malformed model id") from None
    (dim,) = struct.unpack_from("<H", blob, head)
    if not 0 < dim <= _MAX_DIM or len(blob) != head + 2 + 4 * dim:
        raise FeaturesError("features blob length does not match its dimension")
    vector = np.frombuffer(blob, dtype="<f4", count=dim, offset=head + 2).astype(np.float32)
    if not np.all(np.isfinite(vector)) or abs(float(np.linalg.norm(vector)) - 1.0) > _NORM_TOLERANCE:
        raise FeaturesError("features vector is not a finite unit vector")
    return Features(model_id=model_id, vector=vector, text=text or features.decode("ascii"))


def decode_pair(a: str | bytes | Features, b: str | bytes | Features) -> tuple[Features, Features]:
    fa, fb = decode(a), decode(b)
    if fa.model_id != fb.model_id:
        raise FeaturesError(f"features come from different models: {fa.model_id!r} vs {fb.model_id!r}")
    if fa.vector.size != fb.vector.size:
        raise FeaturesError("features have different dimensions")
    return fa, fb
