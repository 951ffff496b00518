"""Pinned model files. An operator adds a model by configuration, not by code.

``KYC_MODEL_REGISTRY_FILE`` may name a JSON list of extra entries with the fields of
:class:`ModelSpec`, e.g. OpenCV Zoo's SFace::

    [{"name": "sface-2021dec", "kind": "embedding", "file": "face_recognition_sface_2021dec.onnx",
      "sha256": "<64 hex>", "input_size": [112, 112], "color": "BGR",
      "mean": [0, 0, 0], "std": [1, 1, 1], "dim": 128,
      "source": "https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface"}]

Then ``KYC_EMBEDDING_MODEL=sface-2021dec`` (and a calibration, ``kycface calibrate``) switches to it.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import ModelError


class ModelSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    kind: Literal["detector", "embedding"]
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str
    # Embedding models only: what the network expects of an aligned face.
    input_size: tuple[int, int] = (112, 112)
    color: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # applied to x / 255
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dim: int = 128

    @property
    def model_id(self) -> str:
        """Stamped into every features blob: the name and the weights' checksum prefix."""
        return f"{self.name}@{self.sha256[:12]}"


BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="yunet-2026may",
        kind="detector",
        file="face_detection_yunet_2026may.onnx",
        sha256="ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0",
        source="https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet (MIT)",
    ),
    ModelSpec(
        name="mobilefacenet",
        kind="embedding",
        file="face_recognition_mobilefacenet.onnx",
        sha256="f055d9c9a4d826d198c42666590fdefa0fdc1374a75ccb6306c3d1b1bf8f74c5",
        source="https://github.com/diandianti/photo_analyze/blob/main/models/mobilefacenet.onnx",
        color="RGB",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        dim=128,
    ),
    ModelSpec(
        name="fr_feature",
        kind="embedding",
        file="face_recognition_fr_feature.onnx",
        sha256="87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
        source=(
            "npm package faceplugin-face-recognition-js@0.0.1, package/model/fr_feature.onnx "
            "(`npm pack faceplugin-face-recognition-js@0.0.1`; declared MIT)"
        ),
        # BGR, not RGB as the package's own JavaScript feeds it: BGR is measurably better on LFW.
        color="BGR",
        # (x - 127) / 128 written as (x / 255 - mean) / std.
        mean=(127 / 255, 127 / 255, 127 / 255),
        std=(128 / 255, 128 / 255, 128 / 255),
        dim=512,
    ),
)


@lru_cache(maxsize=8)
def _registry(extra_file: Path | None) -> dict[str, ModelSpec]:
    specs = {s.name: s for s in BUILTIN}
    if extra_file is not None:
        try:
            entries = json.loads(Path(extra_file).read_text())
            for entry in entries:
                spec = ModelSpec.model_validate(entry)
                specs[spec.name] = spec
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"cannot read model registry {extra_file}: {exc}") from None
    return specs


def get_spec(name: str, kind: str, extra_file: Path | None = None) -> ModelSpec:
    specs = _registry(extra_file)
    spec = specs.get(name)
    if spec is None or spec.kind != kind:
        known = sorted(s.name for s in specs.values() if s.kind == kind)
        raise ModelError(f"unknown {kind} model {name!r}; known: {', '.join(known)}")
    return spec


@lru_cache(maxsize=16)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model_file(spec: ModelSpec, model_dir: Path) -> Path:
    """The model's path, after checking it exists and matches its pinned sha256."""
    path = Path(model_dir) / spec.file
    where = f"looked in {Path(model_dir).resolve()} (set KYC_MODEL_DIR)"
    if not path.is_file():
        raise ModelError(
            f"model file {spec.file} not found; {where}. Get it from {spec.source} and check sha256 {spec.sha256}."
        )
    stat = path.stat()
    actual = _sha256(path.resolve(), stat.st_mtime_ns, stat.st_size)
    if actual != spec.sha256:
        raise ModelError(
            f"model file {path} has sha256 {actual}, expected {spec.sha256}; {where}. "
            f"Fetch it again from {spec.source}."
        )
    return path
