"""KYCDeepFace core library: face engine, gallery, storage, job documents and producer.

Heavy modules (onnxruntime, OpenCV) load on first use of ``KYCDeepFace`` / ``KYCDeepFaceDB``, so
a producer or the HTTP stub importing ``shared.producer`` never pays for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.engine import KYCDeepFace

__all__ = ["KYCDeepFace"]


def __getattr__(name: str) -> Any:
    if name == "KYCDeepFace":
        from shared.engine import KYCDeepFace

        return KYCDeepFace
    raise AttributeError(f"module 'shared' has no attribute {name!r}")
