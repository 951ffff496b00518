"""1:N face galleries: durable templates (Redis or a local file), a synced in-memory index per
process, and the gallery operating point. The entry point is :class:`KYCDeepFaceDB`.

The index's compiled kernels (numba, onnxruntime) load on first use of ``KYCDeepFaceDB``, so a
producer validating gallery job inputs (``shared.jobs.inputs``) never pays for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.gallery.db import KYCDeepFaceDB
    from shared.gallery.factory import open_store

__all__ = ["KYCDeepFaceDB", "open_store"]


def __getattr__(name: str) -> Any:
    if name == "KYCDeepFaceDB":
        from shared.gallery.db import KYCDeepFaceDB

        return KYCDeepFaceDB
    if name == "open_store":
        from shared.gallery.factory import open_store

        return open_store
    raise AttributeError(f"module 'shared.gallery' has no attribute {name!r}")
