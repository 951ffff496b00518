"""KYCDeepFace core library: face engine, gallery, storage, job documents and producer.

Heavy modules (onnxruntime, OpenCV) load on first use of ``KYCDeepFace`` / ``KYCDeepFaceDB``, so
a producer or the HTTP stub importing ``shared.producer`` never pays for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.engine import KYCDeepFace
    from shared.gallery import KYCDeepFaceDB

__all__ = ["KYCDeepFace", "KYCDeepFaceDB"]


def __getattr__(name: str) -> Any:
    if name == "KYCDeepFace":
        from shared.engine import KYCDeepFace

        return KYCDeepFace
    if name == "KYCDeepFaceDB":
        from shared.gallery import KYCDeepFaceDB

        return KYCDeepFaceDB
    raise AttributeError(f"module 'shared' has no attribute {name!r}")
